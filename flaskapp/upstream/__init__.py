"""The model server, behind one small interface; knows nothing of Flask.

`Upstream` (client.py) makes blocking and streaming calls over a transport
(transport.py and httpbody.py: the lean HTTP/1.1 client); `ChatStream` (stream.py)
is an open stream, read through `ChunkParser` (events.py).
"""
