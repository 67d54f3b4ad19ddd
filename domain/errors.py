"""Domain errors and the machine-readable reason codes shared with the HTTP error envelope."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """The error codes of the API contract (docs/errors.md)."""

    VALIDATION_ERROR = "VALIDATION_ERROR"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    RISK_LIMIT_EXCEEDED = "RISK_LIMIT_EXCEEDED"
    SYMBOL_NOT_FOUND = "SYMBOL_NOT_FOUND"
    MARKET_CLOSED = "MARKET_CLOSED"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    AUTHENTICATION_ERROR = "AUTHENTICATION_ERROR"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    TRADING_HALTED = "TRADING_HALTED"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class DomainError(Exception):
    """Base of every error the domain raises; carries a reason code for the API."""

    code: ErrorCode = ErrorCode.INTERNAL_ERROR


class ValidationError(DomainError, ValueError):
    """Invalid input: names the offending field and the rule it broke."""

    code = ErrorCode.VALIDATION_ERROR

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(rule)


class CurrencyMismatchError(ValidationError):
    """Arithmetic across two currencies."""

    def __init__(self, left: str, right: str) -> None:
        super().__init__("currency", f"Cannot combine {left} with {right}: currencies differ")


class IllegalTransitionError(DomainError):
    """An order status change that the order state machine does not allow."""

    code = ErrorCode.CONFLICT

    def __init__(self, order_id: object, current: str, target: str) -> None:
        self.current = current
        self.target = target
        super().__init__(f"Order {order_id}: illegal status transition {current} -> {target}")


class OverfillError(ValidationError):
    """A fill that would take an order past its quantity."""

    def __init__(self, order_id: object, quantity: object, filled: object, fill: object) -> None:
        super().__init__(
            "quantity",
            f"Order {order_id}: fill of {fill} would exceed the order quantity {quantity} "
            f"({filled} already filled)",
        )
