"""The Kitfile: KitOps' YAML manifest of a ModelKit (model, parts, code, datasets,
docs, prompts, MCP servers), parsed into frozen pydantic models.

Accepts what KitOps accepts (shared/reference/kitops.md §1): unknown keys and wrong
types are errors, paths are relative to the context directory and may not leave it,
two entries may not share a path. Unlike KitOps, every error names the key and the
line and says what to do. The same models read a ModelKit's config blob, which is the
Kitfile as JSON with ``digest``/``diffId`` on every layer-bearing entry.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from tether.errors import KitfileError
from tether.manifest import yamlsafe
from tether.oci.reference import parse_reference

MANIFEST_VERSION = "1.0.0"
_PART_TYPE = re.compile(r"^[\w][\w.-]*$")
_HINT = "see docs/kitfile.md for the Kitfile format"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Layered(_Entry):
    # Set by the packer in the config blob; never written in a user's Kitfile.
    digest: str | None = None
    diffId: str | None = None


class Package(_Entry):
    name: str | None = None
    version: str | None = None
    description: str | None = None
    license: str | None = None
    authors: list[str] | None = None


class ModelPart(_Layered):
    name: str | None = None
    path: str | None = None
    license: str | None = None
    type: str | None = None


class Model(_Layered):
    name: str | None = None
    path: str | None = None
    license: str | None = None
    framework: str | None = None
    format: str | None = None
    version: str | None = None
    description: str | None = None
    parts: list[ModelPart] | None = None
    parameters: Any = None


class Code(_Layered):
    path: str | None = None
    description: str | None = None
    license: str | None = None


class Dataset(_Layered):
    name: str | None = None
    path: str | None = None
    description: str | None = None
    license: str | None = None
    parameters: Any = None
    remotePath: str | None = None
    remoteHash: str | None = None


class Doc(_Layered):
    path: str | None = None
    description: str | None = None


class Prompt(_Layered):
    name: str | None = None
    path: str | None = None
    description: str | None = None


class McpServer(_Layered):
    name: str | None = None
    path: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class LayerSpec:
    """One layer a Kitfile asks for, in KitOps' fixed layer order."""

    section: str  # model | parts | code | datasets | docs | prompts | mcpServers
    index: int
    path: str  # cleaned, slash-separated, relative to the context; "." for the root
    base: str  # Kit media-type base: model | modelpart | code | dataset | docs | mcpb
    name: str | None  # what --filter TYPE:NAME matches besides the path
    subtype: str | None = None

    @property
    def key(self) -> str:
        return (
            "model" if self.section == "model" else f"{_yaml_section(self.section)}[{self.index}]"
        )

    @property
    def filter_type(self) -> str:
        return {"parts": "model", "mcpServers": "mcpservers"}.get(self.section, self.section)


class Kitfile(_Entry):
    manifestVersion: str | None = None
    package: Package | None = None
    model: Model | None = None
    code: list[Code] | None = None
    datasets: list[Dataset] | None = None
    docs: list[Doc] | None = None
    prompts: list[Prompt] | None = None
    mcpServers: list[McpServer] | None = None

    # -- reading --------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, text: str | bytes, *, source: str = "Kitfile") -> tuple[Kitfile, list[str]]:
        """Parse and validate a Kitfile; returns it with warnings. Raises KitfileError."""
        try:
            located = yamlsafe.load(text, typed=_is_typed)
        except yamlsafe.YamlProblem as exc:
            raise _error(
                source, exc.line, exc.message, "fix the YAML; only plain data is allowed"
            ) from None
        data = located.value
        if data is None:
            raise _error(
                source,
                None,
                "the Kitfile is empty",
                "start with 'manifestVersion: 1.0.0' and a model, code or datasets section",
            )
        if not isinstance(data, dict):
            raise _error(
                source,
                1,
                "the Kitfile must be a mapping of keys such as manifestVersion, package, model",
                _HINT,
            )
        for path in _layer_info_keys(data):
            raise _error(
                source,
                located.line_of(path),
                f"unknown key '{path[-1]}' in {_dotted(path[:-1])}",
                "digest and diffId are written by the packer; remove them",
            )
        try:
            kitfile = cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(err["loc"])
            raise _error(
                source, located.line_of(loc), _describe(err, loc), _hint_for(err, loc)
            ) from None
        problems = kitfile.problems()
        if problems:
            path, message = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise _error(source, located.line_of(path), message + more, _HINT)
        return kitfile, kitfile.warnings()

    @classmethod
    def from_config(cls, data: bytes) -> Kitfile:
        """Read a ModelKit config blob (Kitfile JSON). Unknown keys from newer tools are
        dropped rather than refused: a config is data to show, not a user's file."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise KitfileError(
                f"ModelKit config is not JSON ({exc})",
                hint="the ModelKit is damaged or not a KitOps ModelKit",
            ) from None
        try:
            return cls.model_validate(_prune(cls, doc))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise KitfileError(
                f"ModelKit config: {_describe(err, tuple(err['loc']))}",
                hint="the ModelKit was written by an incompatible tool",
            ) from None

    # -- rules ----------------------------------------------------------------------

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """KitOps' validation rules; each problem is (key path, message)."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        seen: dict[str, str] = {}

        def check_path(
            where: tuple[str | int, ...],
            path: str | None,
            *,
            required: bool = True,
            allow_ref: bool = False,
        ) -> None:
            label = _dotted(where)
            if path is None or path == "":
                if required:
                    out.append(((*where, "path"), f"{label}.path is missing"))
                return
            problem = local_path_problem(path, allow_ref=allow_ref)
            if problem == "ref":
                return
            if problem:
                out.append(((*where, "path"), f"{label}.path {path!r}: {problem}"))
                return
            clean = clean_path(path)
            if clean in seen:
                out.append(
                    ((*where, "path"), f"{seen[clean]} and {label} use the same path {clean!r}")
                )
            else:
                seen[clean] = label

        if self.model is not None:
            check_path(("model",), self.model.path, required=False, allow_ref=True)
            for i, part in enumerate(self.model.parts or []):
                check_path(("model", "parts", i), part.path)
                if part.type is not None and not _PART_TYPE.match(part.type):
                    out.append(
                        (
                            ("model", "parts", i, "type"),
                            f"model.parts[{i}].type {part.type!r} must be letters, digits, "
                            "dots, dashes and underscores",
                        )
                    )
                elif part.type is not None and len(part.type) > 64:
                    out.append(
                        (
                            ("model", "parts", i, "type"),
                            f"model.parts[{i}].type is longer than 64 characters",
                        )
                    )
        for i, code in enumerate(self.code or []):
            check_path(("code", i), code.path)
        for i, ds in enumerate(self.datasets or []):
            where = ("datasets", i)
            if ds.remoteHash and not ds.remotePath:
                out.append(
                    (
                        (*where, "remoteHash"),
                        f"datasets[{i}].remoteHash is only applicable when remotePath is set",
                    )
                )
            if ds.remotePath:
                if not ds.remotePath.startswith("s3://") and ":" not in ds.remotePath:
                    out.append(
                        (
                            (*where, "remotePath"),
                            f"datasets[{i}].remotePath: only S3 "
                            "URLs and ModelKit references are supported",
                        )
                    )
                elif ds.remotePath.startswith("s3://") and not ds.remoteHash:
                    out.append(
                        (
                            (*where, "remoteHash"),
                            f"datasets[{i}]: remoteHash is required when remotePath is an S3 URL",
                        )
                    )
            check_path(where, ds.path, required=not ds.remotePath)
        for i, doc in enumerate(self.docs or []):
            check_path(("docs", i), doc.path)
        for i, prompt in enumerate(self.prompts or []):
            check_path(("prompts", i), prompt.path)
        names: set[str] = set()
        for i, server in enumerate(self.mcpServers or []):
            where = ("mcpServers", i)
            if not server.name:
                out.append(((*where, "name"), f"mcpServers[{i}] must have a name"))
            elif server.name in names:
                out.append(((*where, "name"), f"duplicate mcpServer name {server.name!r}"))
            else:
                names.add(server.name)
            if server.path and not server.path.endswith(".mcpb"):
                out.append(
                    ((*where, "path"), f"mcpServers[{i}].path must point to a single .mcpb file")
                )
            check_path(where, server.path)
        return out

    def warnings(self) -> list[str]:
        out = []
        if self.manifestVersion != MANIFEST_VERSION:
            out.append(
                f"unrecognized manifestVersion {self.manifestVersion!r}: "
                f"treating the Kitfile as {MANIFEST_VERSION}"
            )
        for ds in self.datasets or []:
            if ds.remotePath:
                out.append(
                    f"dataset {ds.name or ds.path} lives at {ds.remotePath}: recorded in "
                    "the Kitfile, not packed, and not checked by this version"
                )
        return out

    @property
    def model_reference(self) -> str | None:
        """The parent ModelKit when ``model.path`` is a reference, not a local path."""
        if (
            self.model
            and self.model.path
            and local_path_problem(self.model.path, allow_ref=True) == "ref"
        ):
            return self.model.path
        return None

    # -- layers ---------------------------------------------------------------------

    def layer_specs(self) -> list[LayerSpec]:
        """Layers in KitOps' fixed order: model, parts, code, datasets, docs, prompts, MCP."""
        specs: list[LayerSpec] = []
        if self.model is not None:
            if self.model.path and self.model_reference is None:
                specs.append(
                    LayerSpec("model", 0, clean_path(self.model.path), "model", self.model.name)
                )
            for i, part in enumerate(self.model.parts or []):
                specs.append(
                    LayerSpec("parts", i, clean_path(part.path or ""), "modelpart", part.name)
                )
        for i, code in enumerate(self.code or []):
            specs.append(LayerSpec("code", i, clean_path(code.path or ""), "code", None))
        for i, ds in enumerate(self.datasets or []):
            if ds.remotePath:
                continue
            specs.append(LayerSpec("datasets", i, clean_path(ds.path or ""), "dataset", ds.name))
        for i, doc in enumerate(self.docs or []):
            specs.append(LayerSpec("docs", i, clean_path(doc.path or ""), "docs", None))
        for i, prompt in enumerate(self.prompts or []):
            specs.append(
                LayerSpec(
                    "prompts",
                    i,
                    clean_path(prompt.path or ""),
                    "code",
                    prompt.name,
                    subtype="prompt",
                )
            )
        for i, server in enumerate(self.mcpServers or []):
            specs.append(
                LayerSpec("mcpServers", i, clean_path(server.path or ""), "mcpb", server.name)
            )
        return specs

    def entry(self, spec: LayerSpec) -> _Layered:
        if spec.section == "model":
            assert self.model is not None
            return self.model
        if spec.section == "parts":
            assert self.model is not None and self.model.parts is not None
            return self.model.parts[spec.index]
        entries: list[Any] = getattr(self, spec.section)
        return entries[spec.index]  # type: ignore[no-any-return]

    def with_layer_info(self, info: dict[tuple[str, int], tuple[str, str]]) -> Kitfile:
        """A copy with ``digest``/``diffId`` set on the entries named by (section, index)."""
        doc = self.model_dump(exclude_none=True)
        for (section, index), (digest, diff_id) in info.items():
            if section == "model":
                target = doc["model"]
            elif section == "parts":
                target = doc["model"]["parts"][index]
            else:
                target = doc[section][index]
            target["digest"] = digest
            target["diffId"] = diff_id
        return Kitfile.model_validate(doc)

    # -- writing --------------------------------------------------------------------

    def to_config_json(self) -> bytes:
        """The config blob: compact JSON, field order fixed, parameters' keys sorted."""
        doc = self.model_dump(exclude_none=True)
        doc.setdefault("manifestVersion", MANIFEST_VERSION)
        doc.setdefault("package", {})
        ordered = {"manifestVersion": doc.pop("manifestVersion"), **doc}
        return json.dumps(
            _sort_parameters(ordered), separators=(",", ":"), ensure_ascii=False
        ).encode()

    def to_yaml(self) -> str:
        """The Kitfile as a user writes it: no digests, 2-space YAML."""
        import yaml

        doc = self.model_dump(exclude_none=True, exclude=_layer_info_exclude(self))
        if not doc.get("package"):
            doc.pop("package", None)
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)


# -- paths ----------------------------------------------------------------------------


def clean_path(path: str) -> str:
    """Slash-separated, normalized, relative; ``""`` and ``"./"`` become ``"."``."""
    cleaned = posixpath.normpath(path) if path else "."
    return cleaned


def local_path_problem(path: str, *, allow_ref: bool = False) -> str | None:
    """Why ``path`` is not an acceptable local Kitfile path; ``"ref"`` for a ModelKit
    reference (when allowed); None when it is fine."""
    if "\x00" in path:
        return "contains a NUL character"
    if "\\" in path:
        return "uses '\\'; write paths with '/'"
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path):
        if path.lower().startswith(("http://", "https://")):
            return "HTTP URLs are not supported in paths"
        return "URLs are not supported in paths (for S3 datasets use remotePath)"
    if allow_ref and (":" in path or "@" in path):
        try:
            parse_reference(path)
            return "ref"
        except Exception:
            pass
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return (
            "absolute paths are not supported in a Kitfile; use a path relative to the "
            "context directory"
        )
    cleaned = clean_path(path)
    if cleaned == ".." or cleaned.startswith("../"):
        return "paths outside the context directory are not supported"
    return None


def is_within(path: str, parent: str) -> bool:
    """Component-wise containment: ``data-v2`` is not within ``data``."""
    if parent == ".":
        return True
    return path == parent or path.startswith(parent + "/")


# -- helpers --------------------------------------------------------------------------


def _is_typed(path: tuple[str | int, ...]) -> bool:
    return path[:2] == ("model", "parameters") or (
        len(path) >= 3 and path[0] == "datasets" and path[2] == "parameters"
    )


def _yaml_section(section: str) -> str:
    return "model.parts" if section == "parts" else section


def _dotted(path: tuple[str | int, ...]) -> str:
    text = ""
    for p in path:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else p)
    return text or "the Kitfile"


def _error(source: str, line: int | None, message: str, hint: str) -> KitfileError:
    where = f"{source}, line {line}" if line else source
    return KitfileError(f"{where}: {message}", hint=hint)


def _describe(err: Any, loc: tuple[Any, ...]) -> str:
    kind = err["type"]
    key = _dotted(loc)
    if kind == "extra_forbidden":
        return f"unknown key '{loc[-1]}' in {_dotted(loc[:-1])}"
    if kind == "string_type":
        return f"{key} must be a string"
    if kind == "list_type":
        return f"{key} must be a list"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"{key} must be a mapping of keys"
    if kind == "missing":
        return f"{key} is missing"
    return f"{key}: {err['msg']}"


def _hint_for(err: Any, loc: tuple[Any, ...]) -> str:
    if err["type"] == "extra_forbidden":
        return f"remove '{loc[-1]}' or check its spelling; {_HINT}"
    if err["type"] == "list_type":
        return f"write {_dotted(loc)} as a list of entries ('- path: ...'); {_HINT}"
    return _HINT


def _layer_info_keys(data: dict[str, Any]) -> list[tuple[str | int, ...]]:
    found: list[tuple[str | int, ...]] = []

    def scan(entry: Any, where: tuple[str | int, ...]) -> None:
        if isinstance(entry, dict):
            found.extend((*where, k) for k in ("digest", "diffId") if k in entry)

    model = data.get("model")
    scan(model, ("model",))
    if isinstance(model, dict) and isinstance(model.get("parts"), list):
        for i, part in enumerate(model["parts"]):
            scan(part, ("model", "parts", i))
    for section in ("code", "datasets", "docs", "prompts", "mcpServers"):
        if isinstance(data.get(section), list):
            for i, entry in enumerate(data[section]):
                scan(entry, (section, i))
    return found


def _layer_info_exclude(kitfile: Kitfile) -> dict[str, Any]:
    drop = {"digest": True, "diffId": True}
    exclude: dict[str, Any] = {}
    if kitfile.model is not None:
        exclude["model"] = dict(drop)
        if kitfile.model.parts:
            exclude["model"]["parts"] = {"__all__": drop}
    for section in ("code", "datasets", "docs", "prompts", "mcpServers"):
        if getattr(kitfile, section):
            exclude[section] = {"__all__": drop}
    return exclude


def _prune(model: type[BaseModel], data: Any) -> Any:
    """Drop keys a model does not know, recursively (for configs from newer tools)."""
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        sub = _submodel(field.annotation)
        if sub is not None and isinstance(value, list):
            out[key] = [_prune(sub, v) for v in value]
        elif sub is not None:
            out[key] = _prune(sub, value)
        else:
            out[key] = value
    return out


def _submodel(annotation: Any) -> type[BaseModel] | None:
    import typing

    for arg in (annotation, *typing.get_args(annotation)):
        for inner in (arg, *typing.get_args(arg)):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _sort_parameters(doc: dict[str, Any]) -> dict[str, Any]:
    def sort(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: sort(value[k]) for k in sorted(value)}
        if isinstance(value, list):
            return [sort(v) for v in value]
        return value

    if isinstance(doc.get("model"), dict) and "parameters" in doc["model"]:
        doc["model"]["parameters"] = sort(doc["model"]["parameters"])
    for ds in doc.get("datasets") or []:
        if "parameters" in ds:
            ds["parameters"] = sort(ds["parameters"])
    return doc
