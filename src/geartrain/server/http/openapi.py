"""The OpenAPI 3 document of the HTTP listener, served at ``/openapi.json``.

Written out by hand rather than generated from the handlers: it is the contract that
the schema tests (schemathesis) hold the server to, so it must not follow the code by
construction.
"""

from __future__ import annotations

from typing import Any

from geartrain.protocol.constants import MAX_UNIQUE_SIZE

from .gateway import MAX_FUNCTION_SIZE, MAX_TIMEOUT

JSON = "application/json"
BINARY = "application/octet-stream"


def _text_of_bytes(limit: int, minimum: int = 0) -> dict[str, Any]:
    """A name Gearman limits in bytes. JSON Schema counts characters, so names over HTTP
    are printable ASCII (one byte each), and the server holds them to that."""
    return {
        "type": "string",
        "minLength": minimum,
        "maxLength": limit,
        "pattern": "^[ -~]*$",
        "description": f"Printable ASCII, at most {limit} characters.",
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref("Error")}}}


def _json(description: str, schema: str, headers: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": _ref(schema)}},
    }
    if headers:
        answer["headers"] = _RESULT_HEADERS
    return answer


_RESULT_HEADERS = {
    "X-Gearman-Job-Handle": {"description": "The job's handle.", "schema": {"type": "string"}},
    "X-Gearman-Command": {
        "description": "WORK_COMPLETE, WORK_FAIL, WORK_EXCEPTION, JOB_CREATED, or WORK_DATA "
        "when the response streams data sent before the result.",
        "schema": {"type": "string"},
    },
}

_FUNCTION = {
    "name": "function",
    "in": "path",
    "required": True,
    "description": "The Gearman function name.",
    "schema": _text_of_bytes(MAX_FUNCTION_SIZE, minimum=1),
}
_HANDLE = {
    "name": "handle",
    "in": "path",
    "required": True,
    "description": "A job handle, as returned when the job was submitted.",
    "schema": {"type": "string"},
}
_TIMEOUT_SCHEMA = {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT}
_TIMEOUT_HEADER = {
    "name": "X-Gearman-Timeout",
    "in": "header",
    "description": "Seconds to wait for a foreground job's result (default: no limit).",
    "schema": _TIMEOUT_SCHEMA,
}
_WORKLOAD = {
    "description": "The job's workload (any bytes).",
    "content": {BINARY: {"schema": {"type": "string", "format": "binary"}}},
}


def _result_answers(form: str) -> dict[str, Any]:
    ok = {
        "description": "The job's result (foreground), streamed in chunks when the job sends "
        "data before it; for gearmand's form also a failed job (X-Gearman-Command: "
        "WORK_FAIL) or, background, JOB_CREATED with an empty body.",
        "headers": _RESULT_HEADERS,
        "content": {BINARY: {"schema": {"type": "string", "format": "binary"}}},
    }
    answers: dict[str, Any] = {"200": ok}
    if form == "gateway":
        answers["202"] = _json("Background job accepted.", "Created", headers=True)
        answers["502"] = _error("The job failed (WORK_FAIL) or raised (WORK_EXCEPTION).")
    answers |= {
        "400": _error("A parameter is malformed."),
        "403": _DENIED,
        "404": _error("No function named."),
        "408": _error("The body stalled."),
        "413": _error("The body is larger than the server's max-packet-size."),
        "503": _error("The job queue is full, or the persistent queue refused the job."),
        "504": _error("The foreground job did not finish within the timeout."),
        "507": _error("The body could not be spooled to disk."),
    }
    return answers


#: The answer to what a permissions file (``--permissions``) does not allow this client.
_DENIED = _error("The permissions file does not allow this client (known by its address).")


def _paths() -> dict[str, Any]:
    submit_parameters = [
        _FUNCTION,
        {"name": "background", "in": "query", "schema": {"type": "boolean", "default": False}},
        {
            "name": "priority",
            "in": "query",
            "schema": {"type": "string", "enum": ["high", "normal", "low"], "default": "normal"},
        },
        {
            "name": "unique",
            "in": "query",
            "description": "Unique id: submissions with the same one share one job "
            "('-' means the workload itself).",
            "schema": _text_of_bytes(MAX_UNIQUE_SIZE),
        },
        {"name": "timeout", "in": "query", "schema": _TIMEOUT_SCHEMA},
        _TIMEOUT_HEADER,
    ]
    gearmand_parameters = [
        _FUNCTION,
        {"name": "X-Gearman-Unique", "in": "header", "schema": _text_of_bytes(MAX_UNIQUE_SIZE)},
        {"name": "X-Gearman-Background", "in": "header", "schema": {"type": "string"}},
        {"name": "X-Gearman-Priority", "in": "header", "schema": {"type": "string"}},
        _TIMEOUT_HEADER,
    ]
    gearmand_post = {
        "summary": "Submit a job in gearmand's -r http form",
        "operationId": "submitGearmandForm",
        "parameters": gearmand_parameters,
        "requestBody": _WORKLOAD,
        "responses": _result_answers("gearmand"),
    }
    return {
        "/healthz": {"get": _probe("alive", "The server process answers.", "Alive")},
        "/readyz": {"get": _probe("ready", "The server takes jobs.", "Ready")},
        "/v1/functions/{function}/jobs": {
            "post": {
                "summary": "Submit a job",
                "operationId": "submitJob",
                "parameters": submit_parameters,
                "requestBody": _WORKLOAD,
                "responses": _result_answers("gateway"),
            }
        },
        "/v1/functions/{function}/uniques/{unique}": {
            "get": {
                "summary": "Status of the job with this unique (GET_STATUS_UNIQUE)",
                "operationId": "statusByUnique",
                "parameters": [
                    _FUNCTION,
                    {
                        "name": "unique",
                        "in": "path",
                        "required": True,
                        "schema": _text_of_bytes(MAX_UNIQUE_SIZE, minimum=1),
                    },
                ],
                "responses": {
                    "200": _json("The job's status.", "UniqueStatus"),
                    "400": _error("A parameter is malformed."),
                    "403": _DENIED,
                    "404": _error("No such resource."),
                },
            }
        },
        "/v1/jobs/{handle}": {
            "get": {
                "summary": "Status of a job (GET_STATUS)",
                "operationId": "status",
                "parameters": [_HANDLE],
                "responses": {
                    "200": _json("The job's status (known: false once it ended).", "Status"),
                    "403": _DENIED,
                    "404": _error("No such resource."),
                },
            },
            "delete": {
                "summary": "Cancel a job that is not running yet",
                "operationId": "cancel",
                "parameters": [_HANDLE],
                "responses": {
                    "200": _json("The job was cancelled.", "Cancelled"),
                    "403": _DENIED,
                    "404": _error("No such job."),
                    "409": _error("The job is running."),
                },
            },
        },
        **_dead_letter_paths(),
        "/{function}": {
            "post": gearmand_post,
            "put": {**gearmand_post, "operationId": "submitGearmandFormPut"},
            "get": {
                "summary": "Submit a job with an empty workload in gearmand's -r http form",
                "operationId": "submitGearmandFormEmpty",
                "parameters": gearmand_parameters,
                "responses": _result_answers("gearmand"),
            },
        },
    }


_DEAD_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "A dead job's id, or the handle it had when it died (the latest such).",
    "schema": {"type": "string"},
}


def _dead_letter_paths() -> dict[str, Any]:
    unknown = _error("No such dead job.")
    return {
        "/v1/dead": {
            "get": {
                "summary": "The dead-letter queue, oldest first",
                "operationId": "listDead",
                "parameters": [
                    {
                        "name": "function",
                        "in": "query",
                        "required": False,
                        "description": "Only the dead jobs of this function.",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": _json("The dead jobs and the queue's totals.", "DeadList"),
                    "403": _DENIED,
                },
            }
        },
        "/v1/dead/{key}": {
            "get": {
                "summary": "One dead job, with every attempt's outcome",
                "operationId": "showDead",
                "parameters": [_DEAD_KEY],
                "responses": {
                    "200": _json("The dead job.", "DeadJob"),
                    "403": _DENIED,
                    "404": unknown,
                },
            },
            "delete": {
                "summary": "Purge a dead job",
                "operationId": "purgeDead",
                "parameters": [_DEAD_KEY],
                "responses": {
                    "200": _json("The dead job is gone.", "DeadPurged"),
                    "403": _DENIED,
                    "404": unknown,
                },
            },
        },
        "/v1/dead/{key}/requeue": {
            "post": {
                "summary": "Submit a dead job again, as a new background job",
                "operationId": "requeueDead",
                "parameters": [_DEAD_KEY],
                "responses": {
                    "202": _json("Requeued; it leaves the dead queue once stored.", "DeadRequeued"),
                    "403": _DENIED,
                    "404": unknown,
                    "503": _error("The persistent queue refused the job."),
                },
            }
        },
    }


def _probe(name: str, summary: str, schema: str) -> dict[str, Any]:
    answers = {"200": _json(summary, schema)}
    if name == "ready":
        answers["503"] = _json("Not ready, and why.", "Unavailable")
    return {"summary": summary, "operationId": name, "responses": answers}


def _schemas() -> dict[str, Any]:
    def obj(properties: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "required": list(properties), "properties": properties}

    string = {"type": "string"}
    count = {"type": "integer", "minimum": 0}
    status = {
        "known": {"type": "boolean"},
        "running": {"type": "boolean"},
        "numerator": count,
        "denominator": count,
    }
    return {
        "Error": obj(
            {"error": obj({"code": string, "message": string})},
        ),
        "Alive": obj({"status": {"type": "string", "enum": ["alive"]}}),
        "Ready": obj({"status": {"type": "string", "enum": ["ready"]}}),
        "Unavailable": obj(
            {"status": {"type": "string", "enum": ["unavailable"]}, "reason": string}
        ),
        "Created": obj({"handle": string}),
        "Cancelled": obj({"handle": string, "cancelled": {"type": "boolean"}}),
        **_dead_letter_schemas(obj),
        "Status": obj({"handle": string, **status}),
        "UniqueStatus": obj(
            {
                "function": string,
                "unique": string,
                "handle": {"type": ["string", "null"]},
                **status,
                "waiting": count,
            }
        ),
    }


def _dead_letter_schemas(obj: Any) -> dict[str, Any]:
    string = {"type": "string"}
    count = {"type": "integer", "minimum": 0}
    summary = {
        "id": count,
        "handle": string,
        "function": string,
        "unique": string,
        "attempts": count,
        "died": {"type": "number"},
        "last_outcome": {"type": ["string", "null"]},
    }
    attempt = obj({"time": {"type": "number"}, "worker": string, "outcome": string, "text": string})
    return {
        "DeadSummary": obj(summary),
        "DeadList": obj(
            {
                "jobs": {"type": "array", "items": _ref("DeadSummary")},
                "total": count,
                "bytes": count,
                "dropped": count,
            }
        ),
        "DeadJob": obj(
            {
                **summary,
                "priority": {"type": "string", "enum": ["high", "normal", "low"]},
                "size": count,
                "history": {"type": "array", "items": attempt},
            }
        ),
        "DeadRequeued": obj({"id": count, "handle": string}),
        "DeadPurged": obj({"id": count, "purged": {"type": "boolean"}}),
    }


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document describing the listener's routes."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "geartrain HTTP gateway",
            "version": version,
            "description": "Health probes and an HTTP/JSON gateway to a Gearman job server. "
            'Errors are JSON: {"error": {"code": ..., "message": ...}}.',
        },
        "paths": _paths(),
        "components": {"schemas": _schemas()},
    }
