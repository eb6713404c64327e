"""The one exception tree of tether.

Every error a user can cause or meet carries a one-line message, a hint that says
what to do next, a stable kebab-case ``code`` and the CLI exit code it maps to::

    TetherError
    ├── UsageError                 bad arguments or references (exit 2)
    │   └── ReferenceFormatError   a REF that does not parse
    ├── WorkspaceError             no project, or a broken .tether/
    ├── ConfigError                settings that do not parse or validate
    ├── StoreError                 the content store
    │   ├── ObjectNotFound         (also FileNotFoundError)
    │   ├── ObjectCorrupted        bytes do not hash to their name
    │   └── LockTimeout            waited too long for another tether process
    ├── KitfileError               Kitfile YAML or schema or path rules
    ├── ModelKitError              ModelKits in the store
    │   ├── ModelKitNotFound       (also LookupError)
    │   ├── TagConflict            moving an immutable version tag
    │   └── UnsafeArchive          a layer that would write outside its target
    ├── UnpackConflict             existing files differ from the ModelKit's
    ├── DatabaseError              SQLite and migrations
    ├── DataError                  tracked data: pointers, trees, checkout
    │   └── RemoteError            data remotes: configuration, transfer, corrupt objects
    ├── RunError                   runs: recording, logging, querying
    │   ├── RunNotFound            (also LookupError)
    │   ├── ParamConflict          a parameter logged twice with different values
    │   └── FilterError            a 'runs list --filter' expression that does not parse (exit 2)
    ├── ReproError                 reproduce: a run that cannot be rebuilt, an environment
    │                              that cannot be recreated
    ├── RegistryError              an OCI registry: unreachable, refusing, or serving bad bytes
    │   └── AuthError              no, wrong or expired credentials; a token that is refused
    ├── ModelError                 the model registry: versions, aliases and their rules
    │   └── ModelNotFound          (also LookupError)
    ├── LineageError               a lineage subject that cannot be found
    └── TeamError                  the team server: users, tokens, projects, grants
        ├── Unauthenticated        no token, or one that is unknown, expired or revoked
        ├── Forbidden              a grant too weak for the action
        ├── StreamGap              a streamed batch past what the server holds
        └── ProjectNotFound        (also LookupError) a project that does not exist, or
                                   that the user was not granted
"""

from __future__ import annotations


class TetherError(Exception):
    """Root of every error tether raises on purpose."""

    code = "tether-error"
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, str | None]:
        """The error as the web UI, the server and their clients read it."""
        return {"error": self.code, "message": self.message, "hint": self.hint}


class UsageError(TetherError):
    """The command was called wrongly; nothing was changed."""

    code = "usage"
    exit_code = 2


class TooLarge(UsageError):
    """A request body over what the server takes (HTTP 413)."""

    code = "too-large"


class ReferenceFormatError(UsageError):
    """A ModelKit reference that does not follow ``[registry/]repo[:tag][@sha256:…]``."""

    code = "bad-reference"


class WorkspaceError(TetherError):
    """No tether project here, or its ``.tether/`` folder is damaged."""

    code = "workspace"


class ConfigError(TetherError):
    """A settings file or ``TETHER_*`` variable that does not parse."""

    code = "config"


class StoreError(TetherError):
    """A failure of the content store."""

    code = "store"


class ObjectNotFound(StoreError, FileNotFoundError):
    """A digest that the store does not hold."""

    code = "object-not-found"


class ObjectCorrupted(StoreError):
    """Stored or received bytes that do not hash to the digest they claim; ``digest``
    names the damaged blob when it is known, so a caller can repair it."""

    code = "object-corrupted"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        code: str | None = None,
        digest: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, code=code)
        self.digest = digest


class UploadOffset(StoreError):
    """A resumed upload that does not start where the receiver's bytes end (HTTP 409)."""

    code = "upload-offset"


class LockTimeout(StoreError):
    """Another tether process held a lock for longer than we were willing to wait."""

    code = "lock-timeout"


class KitfileError(TetherError):
    """A Kitfile that does not parse or breaks a rule; names the key and the line."""

    code = "kitfile"


class ModelKitError(TetherError):
    """A problem with a ModelKit in the local store."""

    code = "modelkit"


class ModelKitNotFound(ModelKitError, LookupError):
    """A reference that matches no ModelKit in the local store."""

    code = "modelkit-not-found"


class TagConflict(ModelKitError):
    """An immutable version tag that already points at another ModelKit."""

    code = "tag-conflict"


class UnsafeArchive(ModelKitError):
    """A layer entry that is a link, a device, or a path leaving the target directory."""

    code = "unsafe-archive"


class UnpackConflict(TetherError):
    """Files in the target directory differ from the ModelKit's and would be overwritten."""

    code = "unpack-conflict"


class DatabaseError(TetherError):
    """SQLite failed, or the database schema is newer than this tether."""

    code = "database"


class DataError(TetherError):
    """Tracking data: a path that cannot be added, a pointer that does not parse, a
    checkout that would lose changes."""

    code = "data"


class RemoteError(DataError):
    """A data remote: unknown name, unreachable, or serving bytes that fail verification."""

    code = "remote"


class RunError(TetherError):
    """Recording, logging to or querying runs."""

    code = "run"


class RunNotFound(RunError, LookupError):
    """A run id, id prefix or name that matches no run (or more than one)."""

    code = "run-not-found"


class ParamConflict(RunError):
    """Parameters are write-once per run: the same key was logged with another value."""

    code = "param-conflict"


class FilterError(RunError):
    """A filter expression that does not parse or names an unknown field."""

    code = "bad-filter"
    exit_code = 2


class ReproError(TetherError):
    """A run that cannot be reproduced here: code, inputs or interpreter cannot be
    rebuilt, or the environment cannot be recreated."""

    code = "reproduce"


class RegistryError(TetherError):
    """Talking to an OCI registry: it cannot be reached, refuses a request, or serves
    content that fails verification (wrong digest or size, oversized documents, unsafe
    redirects)."""

    code = "registry"


class AuthError(RegistryError):
    """The registry wants credentials tether does not have, or refuses the ones it has."""

    code = "auth"


class ModelError(TetherError):
    """The model registry: an unknown model, version or alias, or a change its rules
    refuse (deleting a version an alias points to, promoting an archived version)."""

    code = "model"


class ModelNotFound(ModelError, LookupError):
    code = "model-not-found"


class LineageError(TetherError):
    """A lineage question tether cannot answer: an unknown subject or a bad depth."""

    code = "lineage"


class TeamError(TetherError):
    """The team server: its users, tokens, projects and grants."""

    code = "team"


class Unauthenticated(TeamError):
    code = "unauthenticated"


class Forbidden(TeamError):
    code = "forbidden"


class StreamGap(TeamError):
    """A streamed batch starts past what the server holds of the run: a batch between
    them was lost. The stream stops; ``tether sync`` sends the whole run."""

    code = "stream-gap"


class ProjectNotFound(TeamError, LookupError):
    code = "project-not-found"
