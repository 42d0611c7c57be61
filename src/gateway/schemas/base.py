"""What every body of the HTTP API shares: its limits, the parsing of a request body into its
model with each refusal one of the gateway's errors, and the error body itself."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from gateway.errors import GatewayError

# Limits of the API, shared by the bodies, the data plane and the OpenAPI document.
MAX_ID_LEN = 128
MAX_REWARDS_PER_BATCH = 1000
# A label is kept in the request's record and the feedback stream: bounded like an id is.
MAX_LABEL_BYTES = 64 * 1024
MAX_REASON_LEN = 500
# The default of the gateway's max_instances (GATEWAY_MAX_INSTANCES): what the document states.
DEFAULT_MAX_INSTANCES = 1000

# Where the OpenAPI document keeps these schemas; a schema written by hand refers there too.
REF_TEMPLATE = "#/components/schemas/{model}"


def ref(model: type[BaseModel] | str) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=model if isinstance(model, str) else model.__name__)}


def one_of(schema: dict[str, Any]) -> None:
    """`json_schema_extra` of a union whose members exclude each other: say so (oneOf), where
    pydantic says anyOf; of a list, about its items."""
    target = schema["items"] if "items" in schema and "anyOf" not in schema else schema
    if "anyOf" in target:  # pydantic may hand the same schema twice
        target["oneOf"] = target.pop("anyOf")


@dataclass(frozen=True)
class Refusal:
    """How the gateway refuses one field of a body: the error class, its code and message. The
    text of a validator's own ValueError is kept (one field, several rules)."""

    error: type[GatewayError]
    code: str
    message: str

    def __call__(self, detail: ErrorDetails | None = None) -> GatewayError:
        own = detail.get("ctx", {}).get("error") if detail and detail["type"] == "value_error" else None
        return self.error(self.message if own is None else str(own), code=self.code)


class Body(BaseModel):
    """A request body. Parsed strictly (JSON types, no coercion: "1" is not a number); fields the
    gateway does not know are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")

    # Each field's refusal, "" for a rule over several fields (a model validator). Pydantic
    # reports the errors in field order and a model rule only when every field passed, so the
    # first error is the one the gateway's checks have always met first.
    refusals: ClassVar[Mapping[str, Callable[[ErrorDetails], GatewayError]]] = {}
    # A body that is not a JSON object: refused so, or (None) read as an empty object.
    not_an_object: ClassVar[Refusal | None] = None

    @classmethod
    def parse(cls, body: Any, context: dict[str, Any] | None = None) -> Self:
        """The body (parsed JSON) as this model; a GatewayError for the first thing wrong.
        `context`: what a rule needs from the data plane (e.g. the policy's reward range)."""
        if not isinstance(body, dict):
            if cls.not_an_object is None:
                return cls.model_validate({})
            raise cls.not_an_object()
        try:
            return cls.model_validate(body, context=context)
        except ValidationError as err:
            raise cls.refusal(err) from None

    @classmethod
    def refusal(cls, err: ValidationError) -> GatewayError:
        detail = err.errors(include_url=False)[0]
        field = str(detail["loc"][0]) if detail["loc"] else ""
        return cls.refusals[field](detail)


# -- errors -------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable, machine-readable code, e.g. `experiment_not_found`.")
    message: str = Field(description="What went wrong, for a person.")


class Error(BaseModel):
    """Every error of the gateway's own API."""

    error: ErrorDetail
