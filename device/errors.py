"""The one error type that every ecgedge command reports as a one-line message with exit 2."""

import click


class EcgEdgeError(click.ClickException):
    """Bad input or configuration, said in one line that names the file or value and what to do.

    It is a ``click.ClickException`` so that every command, library call or not, turns it into
    ``Error: <message>`` on standard error and exit status 2, never a traceback.
    """

    exit_code = 2
