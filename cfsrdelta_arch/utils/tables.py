"""Markdown tables written once: the test runner's results.md, the benchmark and bench-script tables."""


def markdown_table(header, rows):
    """A GitHub-markdown table.

    Args:
        header (list[str]): column titles.
        rows (list[list]): one list of cells per row (formatted with ``str``), as long as ``header``.

    Returns:
        str: the table, lines joined by newlines, without a trailing newline.
    """
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |' for row in rows]
    return '\n'.join(lines)
