"""Peer: the plain Flask streaming view, as most guides write it (the SDK's chunk objects per token)."""
import sys

sys.modules.setdefault("trio", None)  # httpcore2 would import trio, which fails under gevent

import openai  # noqa: E402
from flask import Flask, Response, request, stream_with_context  # noqa: E402

app = Flask(__name__)
client = openai.OpenAI(max_retries=0)
client.default_headers  # noqa: B018 -- run the SDK's one-off `uname` now, not in the first burst


def messages():
    return [{"role": "user", "content": request.args["prompt"]}]


@app.get("/")
def blocking():
    answer = client.chat.completions.create(model="gpt-4", messages=messages())
    return Response(answer.choices[0].message.content, mimetype="text/plain")


@app.get("/stream")
def stream():
    chunks = client.chat.completions.create(model="gpt-4", messages=messages(), stream=True)

    def generate():
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content
    return Response(stream_with_context(generate()), mimetype="text/plain")


@app.get("/healthz")
def healthz():
    return "ok"
