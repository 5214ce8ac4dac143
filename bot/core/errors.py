"""The one exception family the engine treats as a plain failure of a step, not as a bug."""


class ExternalSystemError(Exception):
    """A system the bot works on (a host, Workspace ONE Access, vCenter) refused or could not be reached.

    The message is written for the person reading the thread: what failed and why, never a secret.
    """
