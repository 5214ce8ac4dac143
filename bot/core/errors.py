"""The one exception family the engine treats as a plain failure of a step, not as a bug."""


class ExternalSystemError(Exception):
    """A system the bot works on (a host, Workspace ONE Access, vCenter) refused or could not be reached.

    The message is written for the person reading the thread: what failed and why, never a secret.
    """


class ChangeRefused(Exception):
    """The change request does not authorize the run now (the message names each condition that failed)."""


class ChangeCheckFailed(Exception):
    """The change request could not be read (the system did not answer, or refused the bot's credentials):
    nothing is started. The message says which system, what happened and what to do, never a secret."""
