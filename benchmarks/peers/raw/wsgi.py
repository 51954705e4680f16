"""Peer: the issue's 30-line view, reading the raw upstream lines through the SDK and picking out the text."""
import json
import sys

sys.modules.setdefault("trio", None)  # httpcore2 would import trio, which fails under gevent

import openai  # noqa: E402
from flask import Flask, Response, request, stream_with_context  # noqa: E402

app = Flask(__name__)
client = openai.OpenAI(max_retries=0)
client.default_headers  # noqa: B018 -- run the SDK's one-off `uname` now, not in the first burst


@app.get("/")
def blocking():  # as the plain view: the 30 lines are about streaming
    answer = client.chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": request.args["prompt"]}])
    return Response(answer.choices[0].message.content, mimetype="text/plain")


@app.get("/stream")
def stream():
    messages = [{"role": "user", "content": request.args["prompt"]}]

    def generate():
        with client.chat.completions.with_streaming_response.create(
                model="gpt-4", messages=messages, stream=True) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    choices = json.loads(line[6:])["choices"]
                    if choices and choices[0]["delta"].get("content"):
                        yield choices[0]["delta"]["content"]
    return Response(stream_with_context(generate()), mimetype="text/plain")


@app.get("/healthz")
def healthz():
    return "ok"
