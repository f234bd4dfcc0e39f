"""Request/response checks against the vendored OpenAPI 3.1 specs, for the fakes.

``SpecValidator.load("discord")`` matches paths relative to ``/api/v10`` (the spec's server
prefix); ``SpecValidator.load("chatwoot")`` matches the spec's full paths (``/api/v1/...``,
``/public/api/v1/...``). Schemas are validated with jsonschema Draft 2020-12 (the ``fakes`` and
``test`` extras); every ``$ref`` is resolved through a ``referencing`` registry, and each validator
is built lazily, once per (operation, media type). Without jsonschema, :meth:`SpecValidator.load`
refuses, unless :func:`tolerate_missing_jsonschema` was called (the sandbox on a plain install):
routes and parameters are then still matched, but no schema is checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, ValidationError
    from referencing import Registry

SPEC_FILES = {"discord": "discord-openapi.json", "chatwoot": "chatwoot-swagger.json"}
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_JSON_TYPES = ("application/json", "application/x-www-form-urlencoded", "multipart/form-data")


_missing_jsonschema_tolerated = False


def tolerate_missing_jsonschema() -> bool:
    """Let :meth:`SpecValidator.load` work without jsonschema; whether schemas are checked."""
    global _missing_jsonschema_tolerated
    _missing_jsonschema_tolerated = True
    return jsonschema_installed()


@cache
def jsonschema_installed() -> bool:
    try:
        import jsonschema  # noqa: F401
        import referencing  # noqa: F401
    except ImportError:
        return False
    return True


def _escape(token: str) -> str:
    """One JSON-pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True)
class Parameter:
    """A path or query parameter with the JSON pointer of its schema."""

    name: str
    location: str
    required: bool
    schema_pointer: str | None


@dataclass
class Operation:
    """One (method, path template) of the spec."""

    method: str
    template: str
    operation_id: str
    pointer: str
    parameters: tuple[Parameter, ...]
    body_media: dict[str, str]  # media type -> schema pointer
    body_required: bool
    regex: re.Pattern[str]
    path_names: tuple[str, ...]
    _validators: dict[str, Draft202012Validator] = field(default_factory=dict, repr=False)


class SpecValidator:
    """Validates requests (and responses) against one vendored OpenAPI document."""

    def __init__(self, name: str, document: dict[str, Any], *, check_schemas: bool = True) -> None:
        self.name = name
        self.check_schemas = check_schemas
        self._doc = document
        self._uri = f"urn:diswoot:spec:{name}"
        self._registry: Registry[Any] | None = None
        if check_schemas:
            from referencing import Registry, Resource
            from referencing.jsonschema import DRAFT202012

            resource = Resource.from_contents(document, default_specification=DRAFT202012)
            self._registry = Registry().with_resource(self._uri, resource)
        self._operations = self._build_operations()

    @classmethod
    def load(cls, name: str) -> SpecValidator:
        """The validator for ``"discord"`` or ``"chatwoot"``, cached per process.

        Raises ModuleNotFoundError without jsonschema, unless that was tolerated.
        """
        if not jsonschema_installed() and not _missing_jsonschema_tolerated:
            raise ModuleNotFoundError(
                "the fakes' OpenAPI checks need jsonschema: pip install 'diswoot[fakes]'",
                name="jsonschema",
            )
        return _load(name, jsonschema_installed())

    # -- matching ---------------------------------------------------------------------------

    def _deref(self, node: Any) -> Any:
        """Follow local ``$ref``s of non-schema objects (parameters, responses, bodies)."""
        while isinstance(node, dict) and "$ref" in node:
            node = self._resolve_pointer(node["$ref"])
        return node

    def _resolve_pointer(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are supported: {ref}")
        node: Any = self._doc
        for raw in ref[2:].split("/"):
            token = raw.replace("~1", "/").replace("~0", "~")
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node

    def _parameters(self, raw: list[Any], base: str) -> dict[tuple[str, str], Parameter]:
        out: dict[tuple[str, str], Parameter] = {}
        for index, entry in enumerate(raw):
            pointer = entry["$ref"] if "$ref" in entry else f"{base}/{index}"
            param = self._deref(entry)
            has_schema = "schema" in param
            out[(param["name"], param["in"])] = Parameter(
                name=param["name"],
                location=param["in"],
                required=bool(param.get("required", param["in"] == "path")),
                schema_pointer=f"{pointer}/schema" if has_schema else None,
            )
        return out

    def _build_operations(self) -> list[Operation]:
        ops: list[Operation] = []
        for template, item in self._doc["paths"].items():
            item_ptr = f"#/paths/{_escape(template)}"
            shared = self._parameters(item.get("parameters", []), f"{item_ptr}/parameters")
            names = tuple(re.findall(r"{([^}/]+)}", template))
            pattern = re.escape(template)
            for name in names:
                pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
            regex = re.compile(f"^{pattern}/?$")
            for method in _METHODS:
                if method not in item:
                    continue
                op = item[method]
                op_ptr = f"{item_ptr}/{method}"
                params = dict(shared)
                params.update(self._parameters(op.get("parameters", []), f"{op_ptr}/parameters"))
                body_media: dict[str, str] = {}
                body_required = False
                if "requestBody" in op:
                    body_ptr = op["requestBody"].get("$ref", f"{op_ptr}/requestBody")
                    body = self._deref(op["requestBody"])
                    body_required = bool(body.get("required", False))
                    for media, content in body.get("content", {}).items():
                        if "schema" in content:
                            body_media[media] = f"{body_ptr}/content/{_escape(media)}/schema"
                ops.append(
                    Operation(
                        method=method.upper(),
                        template=template,
                        operation_id=str(op.get("operationId", f"{method} {template}")),
                        pointer=op_ptr,
                        parameters=tuple(params.values()),
                        body_media=body_media,
                        body_required=body_required,
                        regex=regex,
                        path_names=names,
                    )
                )
        # Literal segments win over parameters ("/users/@me" before "/users/{user_id}").
        ops.sort(key=lambda o: (len(o.path_names), -len(o.template)))
        return ops

    def match(self, method: str, path: str) -> Operation | None:
        """The operation for ``method`` and a concrete ``path`` (no server prefix, no query)."""
        method = method.upper()
        for op in self._operations:
            if op.method == method and op.regex.match(path):
                return op
        return None

    def _path_known(self, path: str) -> bool:
        return any(op.regex.match(path) for op in self._operations)

    # -- validation -------------------------------------------------------------------------

    def _validator(self, op: Operation, pointer: str) -> Draft202012Validator:
        from jsonschema import Draft202012Validator

        found = op._validators.get(pointer)
        if found is None:
            schema = {"$ref": f"{self._uri}{pointer}"}
            found = Draft202012Validator(schema, registry=self._registry)
            op._validators[pointer] = found
        return found

    def _errors(self, op: Operation, pointer: str, instance: Any, where: str) -> list[str]:
        if not self.check_schemas:
            return []
        validator = self._validator(op, pointer)
        problems = []
        for error in validator.iter_errors(instance):
            best = _deepest(error)
            location = "/".join(str(p) for p in best.absolute_path) or "(root)"
            problems.append(f"{op.method} {op.template}: {where} {location}: {best.message}")
        return problems

    def check_request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        json_body: Any = None,
        form: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """Human-readable violations of the spec by one request; empty means valid.

        ``form`` is a decoded multipart/urlencoded body; a ``payload_json`` field in it is parsed
        and validated as the JSON body (file parts are not checked).
        """
        op = self.match(method, path)
        if op is None:
            if self._path_known(path):
                return [f"{method.upper()} {path}: method not allowed by the spec"]
            return [f"{method.upper()} {path}: unknown route"]
        problems: list[str] = []
        match = op.regex.match(path)
        assert match is not None
        query = query or {}
        for param in op.parameters:
            if param.location == "path":
                value: str | None = match.group(param.name)
            elif param.location == "query":
                value = query.get(param.name)
                if value is None:
                    if param.required:
                        problems.append(
                            f"{op.method} {op.template}: missing required query parameter "
                            f"{param.name!r}"
                        )
                    continue
            else:
                continue
            if param.schema_pointer is not None and value is not None:
                problems += self._errors(
                    op,
                    param.schema_pointer,
                    _coerce(value, self._resolve_schema(param.schema_pointer)),
                    f"{param.location} parameter {param.name!r}",
                )
        problems += self._check_body(op, json_body, form)
        return problems

    def _resolve_schema(self, pointer: str) -> Any:
        return self._deref(self._resolve_pointer(pointer))

    def _check_body(
        self, op: Operation, json_body: Any, form: Mapping[str, Any] | None
    ) -> list[str]:
        if form is not None:
            if "payload_json" in form:
                raw = form["payload_json"]
                try:
                    body = json.loads(raw)
                except (TypeError, ValueError) as exc:
                    return [f"{op.method} {op.template}: payload_json is not JSON: {exc}"]
                media = next((m for m in _JSON_TYPES if m in op.body_media), None)
            else:
                body = {k: v for k, v in form.items() if not k.startswith("files[")}
                media = next((m for m in _JSON_TYPES[::-1] if m in op.body_media), None)
            if media is None:
                if op.body_media:
                    return [f"{op.method} {op.template}: form body where the spec wants none"]
                return [f"{op.method} {op.template}: request body not allowed"]
            return self._errors(op, op.body_media[media], body, "body")
        if json_body is None:
            if op.body_required:
                return [f"{op.method} {op.template}: request body is required"]
            return []
        pointer = op.body_media.get("application/json")
        if pointer is None:
            return [f"{op.method} {op.template}: JSON body not allowed by the spec"]
        return self._errors(op, pointer, json_body, "body")

    def check_response(self, method: str, path: str, status: int, body: Any) -> list[str]:
        """Violations of the documented response schema for ``status`` (exact, then ``4XX``)."""
        op = self.match(method, path)
        if op is None:
            return [f"{method.upper()} {path}: unknown route"]
        responses = self._resolve_pointer(f"{op.pointer}/responses")
        key = next(
            (k for k in (str(status), f"{str(status)[0]}XX", "default") if k in responses), None
        )
        if key is None:
            return [f"{op.method} {op.template}: status {status} is not documented"]
        ref_or_inline = responses[key]
        base = ref_or_inline.get("$ref", f"{op.pointer}/responses/{_escape(key)}")
        response = self._deref(ref_or_inline)
        content = response.get("content", {})
        if "application/json" not in content or "schema" not in content["application/json"]:
            if body is not None:
                return [f"{op.method} {op.template}: status {status} must have no body"]
            return []
        pointer = f"{base}/content/application~1json/schema"
        return self._errors(op, pointer, body, f"response {status}")


def _deepest(error: ValidationError) -> ValidationError:
    """For ``oneOf``/``anyOf`` failures, jsonschema's pick of the most relevant branch error."""
    from jsonschema.exceptions import best_match

    return best_match([error]) or error


def _coerce(value: str, schema: Any) -> Any:
    """Turn a query/path string into the JSON type its schema asks for, when it parses."""
    types = schema.get("type", "string") if isinstance(schema, dict) else "string"
    types = [types] if isinstance(types, str) else list(types)
    if "string" in types:
        return value
    if "integer" in types:
        try:
            return int(value)
        except ValueError:
            return value
    if "number" in types:
        try:
            return float(value)
        except ValueError:
            return value
    if "boolean" in types and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    return value


@cache
def _load(name: str, check_schemas: bool) -> SpecValidator:
    if name not in SPEC_FILES:
        raise ValueError(f"unknown spec {name!r}; expected one of {sorted(SPEC_FILES)}")
    text = resources.files("diswoot.testing").joinpath("specs", SPEC_FILES[name]).read_text()
    return SpecValidator(name, json.loads(text), check_schemas=check_schemas)
