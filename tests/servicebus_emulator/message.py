"""An AMQP message as the sender encoded it: its sections kept as bytes, read on demand.

The broker never re-encodes what it does not own. On delivery it replaces only the header
(delivery count) and the message annotations (`x-opt-*`), and the application properties
of a dead-lettered message; properties and body go out exactly as they came in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .codec import AMQPDecodeError, Described, Symbol, UInt, ULong, decode_value, encode

HEADER = 0x70
DELIVERY_ANNOTATIONS = 0x71
MESSAGE_ANNOTATIONS = 0x72
PROPERTIES = 0x73
APPLICATION_PROPERTIES = 0x74
DATA = 0x75
FOOTER = 0x78

BATCH_MESSAGE_FORMAT = 0x80013700

_HEADER_FIELDS = ("durable", "priority", "ttl", "first_acquirer", "delivery_count")
_PROPERTY_FIELDS = (
    "message_id",
    "user_id",
    "to",
    "subject",
    "reply_to",
    "correlation_id",
    "content_type",
    "content_encoding",
    "absolute_expiry_time",
    "creation_time",
    "group_id",
    "group_sequence",
    "reply_to_group_id",
)


@dataclass(frozen=True)
class Section:
    code: int
    raw: bytes
    value: Any


@dataclass(frozen=True)
class Message:
    """An immutable AMQP message; the `with_*` methods return changed copies."""

    sections: tuple[Section, ...]

    @classmethod
    def decode(cls, payload: bytes) -> Message:
        sections = []
        offset = 0
        while offset < len(payload):
            described, end = decode_value(payload, offset)
            if not isinstance(described, Described) or not isinstance(described.descriptor, int):
                raise AMQPDecodeError("a message section must be a described value")
            sections.append(
                Section(int(described.descriptor), payload[offset:end], described.value)
            )
            offset = end
        return cls(tuple(sections))

    @classmethod
    def build(
        cls,
        *,
        properties: Mapping[str, Any] | None = None,
        application_properties: Mapping[str, Any] | None = None,
        value: Any = None,
    ) -> Message:
        """A message with an amqp-value body (the management and $cbs replies)."""
        sections = []
        if properties:
            fields = [properties.get(name) for name in _PROPERTY_FIELDS]
            sections.append(_section(PROPERTIES, _trim(fields)))
        if application_properties is not None:
            sections.append(_section(APPLICATION_PROPERTIES, dict(application_properties)))
        sections.append(_section(0x77, value))
        return cls(tuple(sections))

    def encode(self) -> bytes:
        return b"".join(section.raw for section in self.sections)

    def _value(self, code: int) -> Any:
        return next((s.value for s in self.sections if s.code == code), None)

    def _field(self, code: int, names: tuple[str, ...], name: str) -> Any:
        values = self._value(code)
        index = names.index(name)
        if isinstance(values, list) and index < len(values):
            return values[index]
        return None

    def prop(self, name: str) -> Any:
        """A field of the properties section (`message_id`, `reply_to`...), or None."""
        return self._field(PROPERTIES, _PROPERTY_FIELDS, name)

    def header(self, name: str) -> Any:
        return self._field(HEADER, _HEADER_FIELDS, name)

    @property
    def message_annotations(self) -> dict[Any, Any]:
        return dict(self._value(MESSAGE_ANNOTATIONS) or {})

    @property
    def application_properties(self) -> dict[Any, Any]:
        return dict(self._value(APPLICATION_PROPERTIES) or {})

    @property
    def body(self) -> Any:
        """The amqp-value body, or the data sections joined, or None."""
        value = self._value(0x77)
        if value is not None:
            return value
        data = [s.value for s in self.sections if s.code == DATA]
        return b"".join(data) if data else None

    def data_sections(self) -> list[bytes]:
        return [s.value for s in self.sections if s.code == DATA]

    def with_delivery_state(
        self, delivery_count: int, annotations: Mapping[str, Any], first_acquirer: bool = False
    ) -> Message:
        """This message as the broker hands it out: fresh header and broker annotations."""
        header = [self.header(name) for name in _HEADER_FIELDS]
        header[3] = first_acquirer
        header[4] = UInt(delivery_count)
        merged = self.message_annotations
        merged.update({Symbol(key): value for key, value in annotations.items()})
        replaced = self._replace(HEADER, _section(HEADER, _trim(header)))
        return replaced._replace(MESSAGE_ANNOTATIONS, _section(MESSAGE_ANNOTATIONS, merged))

    def with_application_properties(self, extra: Mapping[str, Any]) -> Message:
        merged = self.application_properties
        merged.update(extra)
        return self._replace(APPLICATION_PROPERTIES, _section(APPLICATION_PROPERTIES, merged))

    def with_delivery_annotations(self, annotations: Mapping[str, Any]) -> Message:
        keyed = {Symbol(key): value for key, value in annotations.items()}
        return self._replace(DELIVERY_ANNOTATIONS, _section(DELIVERY_ANNOTATIONS, keyed))

    def without_delivery_annotations(self) -> Message:
        return Message(tuple(s for s in self.sections if s.code != DELIVERY_ANNOTATIONS))

    def _replace(self, code: int, new: Section) -> Message:
        kept = [s for s in self.sections if s.code != code]
        position = next((i for i, s in enumerate(kept) if s.code > code), len(kept))
        kept.insert(position, new)
        return Message(tuple(kept))


def _section(code: int, value: Any) -> Section:
    return Section(code, encode(Described(ULong(code), value)), value)


def _trim(values: list[Any]) -> list[Any]:
    while values and values[-1] is None:
        values.pop()
    return values


def split_batch(payload: bytes) -> list[Message]:
    """The messages inside a batch envelope (format 0x80013700): one per data section."""
    return [Message.decode(data) for data in Message.decode(payload).data_sections()]
