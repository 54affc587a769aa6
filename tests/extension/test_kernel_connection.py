"""Which kernel requests carry code that the audit records."""

from __future__ import annotations

import pytest
from enclave_server.kernel_connection import KernelRequest, code_of_request


def request(msg_type: str, content: dict) -> KernelRequest:
    header = {"msg_id": "m-1", "msg_type": msg_type}
    return KernelRequest("shell", header, {}, content)


@pytest.mark.parametrize(
    ("msg_type", "content", "code"),
    [
        ("execute_request", {"code": "x = 1"}, "x = 1"),
        ("execute_request", {}, ""),
        (
            "debug_request",
            {"command": "evaluate", "arguments": {"expression": "x + 1"}},
            "x + 1",
        ),
        (
            "debug_request",
            {"command": "setVariable", "arguments": {"name": "x", "value": "2"}},
            "x = 2",
        ),
        (
            "debug_request",
            {
                "command": "setExpression",
                "arguments": {"expression": "a[0]", "value": "3"},
            },
            "a[0] = 3",
        ),
        ("debug_request", {"command": "stackTrace", "arguments": {}}, None),
        ("complete_request", {"code": "x.", "cursor_pos": 2}, None),
        ("kernel_info_request", {}, None),
    ],
)
def test_code_of_request(msg_type: str, content: dict, code: str | None) -> None:
    assert code_of_request(request(msg_type, content)) == code


def test_non_string_code_rejected() -> None:
    with pytest.raises(ValueError, match="content.code is not a string"):
        code_of_request(request("execute_request", {"code": ["x = 1"]}))
