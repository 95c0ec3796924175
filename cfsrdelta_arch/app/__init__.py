"""Application layer: the inference engine and CLI, export, benchmark tables and the train/test
runners. Nothing below this package (archs, data, losses, models, utils) imports from it."""
