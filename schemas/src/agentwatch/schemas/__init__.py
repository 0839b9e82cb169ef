"""agentwatch contracts: the event and alert models, their codecs and the price table."""

from agentwatch.schemas._ack import MAX_ACK_BY_CHARS, Ack
from agentwatch.schemas._alert import Alert, AlertScope, AlertState, AlertType, Severity
from agentwatch.schemas._codec import (
    MAX_RECORD_BYTES,
    DecodedRecord,
    Rejected,
    decode_event,
    decode_record,
    describe_validation_error,
    encode_alert,
    encode_event,
    encode_events,
)
from agentwatch.schemas._control import (
    CONTROL_TOPIC,
    ControlAction,
    ControlRecord,
    control_key,
    decode_control,
    encode_control,
)
from agentwatch.schemas._delivery import FAILED_PREFIX, DeliveryFailure
from agentwatch.schemas._event import (
    OPERATION_KINDS,
    SCHEMA_VERSION,
    Event,
    EventKind,
    EventStatus,
)
from agentwatch.schemas._jsonschema import SCHEMA_NAMES, json_schema, json_schema_bytes
from agentwatch.schemas._prices import (
    PRICES_FILE_ENV,
    ModelPrice,
    PriceTable,
    default_price_table,
)
from agentwatch.schemas._records import (
    PARTITION_BATCH_PREFIX,
    PartitionCache,
    is_partition_batch,
    partition_batch_key,
    partition_for,
    session_key,
)
from agentwatch.schemas._time import format_ts, from_us, to_us, utc_now
from agentwatch.schemas.errors import (
    AgentHalted,
    AgentwatchError,
    BackpressureError,
    ConfigError,
    EventValidationError,
    PriceTableError,
    SinkError,
    TransportError,
)

__all__ = [
    "CONTROL_TOPIC",
    "FAILED_PREFIX",
    "MAX_ACK_BY_CHARS",
    "MAX_RECORD_BYTES",
    "OPERATION_KINDS",
    "PARTITION_BATCH_PREFIX",
    "PRICES_FILE_ENV",
    "SCHEMA_NAMES",
    "SCHEMA_VERSION",
    "Ack",
    "AgentHalted",
    "AgentwatchError",
    "Alert",
    "AlertScope",
    "AlertState",
    "AlertType",
    "BackpressureError",
    "ConfigError",
    "ControlAction",
    "ControlRecord",
    "DecodedRecord",
    "DeliveryFailure",
    "Event",
    "EventKind",
    "EventStatus",
    "EventValidationError",
    "ModelPrice",
    "PartitionCache",
    "PriceTable",
    "PriceTableError",
    "Rejected",
    "Severity",
    "SinkError",
    "TransportError",
    "control_key",
    "decode_control",
    "decode_event",
    "decode_record",
    "default_price_table",
    "describe_validation_error",
    "encode_alert",
    "encode_control",
    "encode_event",
    "encode_events",
    "format_ts",
    "from_us",
    "is_partition_batch",
    "json_schema",
    "json_schema_bytes",
    "partition_batch_key",
    "partition_for",
    "session_key",
    "to_us",
    "utc_now",
]
