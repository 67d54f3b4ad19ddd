"""Names Temporal sees, in one place: activity names and the error types that end retries.

The activity classes register under these names and the workflows call the methods of
those classes, so go-to-definition leads from a workflow step to its code while the names
in every recorded history stay what they were.
"""

from __future__ import annotations

from enum import StrEnum


class ActivityName(StrEnum):
    # the order saga
    GET_QUOTE = "get_quote"
    ACCEPT_ORDER = "accept_order"
    APPLY_FILL = "apply_fill"
    RECORD_STATUS = "record_status"
    SUBMIT_ORDER = "submit_order"
    GET_BROKER_ORDER = "get_broker_order"
    CANCEL_AT_BROKER = "cancel_at_broker"
    RECORD_BROKER_REACHABILITY = "record_broker_reachability"
    # parent orders (execution algorithms)
    PLACE_CHILD_ORDER = "place_child_order"
    SYNC_PARENT_ORDER = "sync_parent_order"
    PLACE_LEGS = "place_legs"
    BRACKET_CHILDREN = "bracket_children"
    SYNC_BRACKET = "sync_bracket"
    VOLUME_PROFILE = "volume_profile"
    CHECK_PROTECTION = "check_protection"
    CLEAR_PROTECTION = "clear_protection"
    # operations
    MARKET_DAY = "market_day"
    TAKE_SNAPSHOTS = "take_snapshots"
    BEGIN_RECONCILIATION = "begin_reconciliation"
    COMPARE_WITH_BROKER = "compare_with_broker"
    BOOK_CLOSED_ORDER_FILLS = "book_closed_order_fills"
    FINISH_RECONCILIATION = "finish_reconciliation"
    RECORD_TRADING_STATE = "record_trading_state"


class ErrorType(StrEnum):
    """`ApplicationError.type` of business failures: final, so never retried."""

    SYMBOL_NOT_FOUND = "SymbolNotFound"
    VALIDATION_ERROR = "ValidationError"
    BROKER_REJECTED = "BrokerRejected"
    ORDER_NOT_FOUND = "OrderNotFound"
    ORDER_COMPENSATED = "OrderCompensated"
    NOT_FOUND = "NotFound"


NON_RETRYABLE: list[str] = [
    ErrorType.SYMBOL_NOT_FOUND,
    ErrorType.VALIDATION_ERROR,
    ErrorType.BROKER_REJECTED,
    ErrorType.ORDER_NOT_FOUND,
]
