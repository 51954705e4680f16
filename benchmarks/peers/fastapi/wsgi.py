"""Peer: FastAPI and `AsyncOpenAI` under uvicorn, the seed's stack (the SDK's chunk objects per token).

Named wsgi.py only so that the experiment rig, which serves `wsgi:app`, finds it.
"""
import openai
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, StreamingResponse

app = FastAPI()
client = openai.AsyncOpenAI(max_retries=0)
client.default_headers  # noqa: B018 -- run the SDK's one-off `uname` now, not in the first burst


@app.get("/", response_class=PlainTextResponse)
async def blocking(prompt: str):
    answer = await client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": prompt}])
    return answer.choices[0].message.content


@app.get("/stream")
async def stream(prompt: str):
    chunks = await client.chat.completions.create(
        model="gpt-4", messages=[{"role": "user", "content": prompt}], stream=True)

    async def generate():
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content
    return StreamingResponse(generate(), media_type="text/plain")


@app.get("/healthz", response_class=PlainTextResponse)
async def healthz():
    return "ok"
