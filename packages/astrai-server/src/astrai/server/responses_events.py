"""The Responses API's output: the response body and its SSE event sequence, in OpenAI's shape.

Built-in tools other than `file_search` (RAG over this server's vector stores,
`astrai.server.file_search`) are refused; function tools work as in chat. A stream is

    response.created, response.in_progress,
    with file_search: its item added, response.file_search_call.in_progress / searching / completed, done,
    per output item: response.output_item.added,
        message: response.content_part.added, response.output_text.delta..., response.output_text.done,
                 response.content_part.done
        function call: response.function_call_arguments.delta..., response.function_call_arguments.done
    response.output_item.done, ..., then response.completed (or response.incomplete)

each event with a growing `sequence_number`, written as `event: <type>` + `data: <json>`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def sse_event(payload: dict) -> str:
    return f"event: {payload['type']}\ndata: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


@dataclass
class ResponseShell:
    """The fields of a response object that do not depend on what was generated."""

    id: str
    created_at: int
    model: str
    instructions: str | None
    max_output_tokens: int | None
    temperature: float | None
    top_p: float | None
    tools: list[dict]
    tool_choice: Any
    parallel_tool_calls: bool
    text_format: dict
    metadata: dict = field(default_factory=dict)
    user: str | None = None

    def body(self, status: str, output: list[dict], usage_: dict | None,
             incomplete_reason: str | None = None) -> dict:
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "background": False, "error": None,
            "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
            "instructions": self.instructions, "max_output_tokens": self.max_output_tokens,
            "model": self.model, "output": output, "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
            "store": False, "temperature": self.temperature, "text": {"format": self.text_format},
            "tool_choice": self.tool_choice, "tools": self.tools, "top_p": self.top_p,
            "truncation": "disabled", "usage": usage_, "user": self.user, "metadata": self.metadata,
        }


def message_item(item_id: str, text: str, status: str) -> dict:
    content = [] if status == "in_progress" else [text_part(text)]
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


class EventWriter:
    """Numbers the events of one stream and tracks the output items as they open and close."""

    def __init__(self, shell: ResponseShell) -> None:
        self.shell = shell
        self.sequence = 0
        self.output: list[dict] = []
        self._open: dict | None = None  # the item being streamed

    def event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse_event(payload)

    def start(self) -> list[str]:
        body = self.shell.body("in_progress", [], None)
        return [self.event("response.created", response=body), self.event("response.in_progress", response=body)]

    # --- a message item ------------------------------------------------------------------

    def text(self, delta: str) -> list[str]:
        events = []
        if self._open is None or self._open["type"] != "message":
            events += self.close_item()
            item = message_item(new_id("msg"), "", "in_progress")
            self._open = {**item, "_text": ""}
            self.output.append(item)
            index = len(self.output) - 1
            events.append(self.event("response.output_item.added", output_index=index, item=item))
            events.append(self.event("response.content_part.added", item_id=item["id"], output_index=index,
                                     content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
        if delta:
            self._open["_text"] += delta
            events.append(self.event("response.output_text.delta", item_id=self._open["id"],
                                     output_index=len(self.output) - 1, content_index=0, delta=delta, logprobs=[]))
        return events

    # --- a finished file_search call (it ran before generation started) --------------------

    def file_search(self, item: dict) -> list[str]:
        events = self.close_item()
        self.output.append(item)
        index = len(self.output) - 1
        running = {**item, "status": "in_progress", "results": None}
        events.append(self.event("response.output_item.added", output_index=index, item=running))
        for stage in ("in_progress", "searching", "completed"):
            events.append(self.event(f"response.file_search_call.{stage}", output_index=index, item_id=item["id"]))
        events.append(self.event("response.output_item.done", output_index=index, item=item))
        return events

    # --- a function call item ------------------------------------------------------------

    def call(self, call_id: str, name: str) -> list[str]:
        events = self.close_item()
        item = function_call_item(new_id("fc"), call_id, name, "", "in_progress")
        self._open = {**item, "_args": ""}
        self.output.append(item)
        events.append(self.event("response.output_item.added", output_index=len(self.output) - 1, item=item))
        return events

    def arguments(self, delta: str) -> list[str]:
        assert self._open is not None and self._open["type"] == "function_call"
        self._open["_args"] += delta
        return [self.event("response.function_call_arguments.delta", item_id=self._open["id"],
                           output_index=len(self.output) - 1, delta=delta)]

    def close_item(self, status: str = "completed") -> list[str]:
        """Finish the item being streamed (its done events), if any."""
        item, self._open = self._open, None
        if item is None:
            return []
        index = len(self.output) - 1
        events = []
        if item["type"] == "message":
            text = item["_text"]
            events.append(self.event("response.output_text.done", item_id=item["id"], output_index=index,
                                     content_index=0, text=text, logprobs=[]))
            events.append(self.event("response.content_part.done", item_id=item["id"], output_index=index,
                                     content_index=0, part=text_part(text)))
            done = message_item(item["id"], text, status)
        else:
            events.append(self.event("response.function_call_arguments.done", item_id=item["id"],
                                     output_index=index, arguments=item["_args"]))
            done = function_call_item(item["id"], item["call_id"], item["name"], item["_args"], status)
        self.output[index] = done
        events.append(self.event("response.output_item.done", output_index=index, item=done))
        return events

    def finish(self, usage_: dict, incomplete_reason: str | None) -> list[str]:
        status = "incomplete" if incomplete_reason else "completed"
        events = self.close_item("incomplete" if incomplete_reason else "completed")
        body = self.shell.body(status, self.output, usage_, incomplete_reason)
        kind = "response.incomplete" if incomplete_reason else "response.completed"
        return [*events, self.event(kind, response=body)]
