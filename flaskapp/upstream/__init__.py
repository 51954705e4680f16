"""The model server, behind one small interface; knows nothing of Flask.

`Upstream` (client.py) makes blocking and streaming calls through a `Transport`
(transport.py): the lean one over `ConnectionPool` (http11.py, httpbody.py: an HTTP/1.1
client), or httpx's; `ChatStream` (stream.py) is an open stream, turned read by read into
the writes its caller's encoding asks for, its events read by `ChunkParser` (events.py).
"""
