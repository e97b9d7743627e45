"""The root exceptions shared by facade, supervisor and CLI."""


class JobsError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(JobsError):
    """The env file or an environment variable holds a bad value."""


class DefinitionError(JobsError):
    """A job definition file is malformed; the message names the file and field."""


class SpecError(JobsError):
    """A job spec (or a request that would become one) is invalid."""


class UnknownJob(JobsError):
    """No run or queued spec exists for this serviceID."""
