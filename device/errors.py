"""ecgedge's exceptions: plain Python exceptions, one per kind of mistake.

The library raises them; the command line (``ecgedge.cli``) is the one boundary that turns
any of them into one line ``Error: <message>`` on standard error and exit status 2. The
library itself does not depend on click.

::

    EcgEdgeError(Exception)
    |-- BundleError    a model bundle that is missing, inconsistent, tampered with or unsigned
    |-- InputError     a signal, header or stream the device was given that it can not use
    |-- ConfigError    a setting (task, option, pipeline config) that is out of range
    `-- DataError      PhysioNet data that is missing or unreadable
"""


class EcgEdgeError(Exception):
    """Bad input or configuration, said in one line that names the file or value and what to do.

    Attributes
    ----------
    message : str, the one-line message.
    exit_code : int, the exit status the command line ends with (2).
    """

    exit_code = 2

    def __init__(self, message):
        super().__init__(message)
        self.message = str(message)

    def __str__(self):
        return self.message


class BundleError(EcgEdgeError):
    """A model bundle that is missing, inconsistent, tampered with or not signed as required."""


class InputError(EcgEdgeError):
    """A signal, header, file or stream given to the device that it can not use."""


class ConfigError(EcgEdgeError, ValueError):
    """A setting out of range or of the wrong type (a ValueError too, as scikit-learn's errors are)."""


class DataError(EcgEdgeError):
    """PhysioNet data (records, annotations, labels) that is missing or unreadable."""
