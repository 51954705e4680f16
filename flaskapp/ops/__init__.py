"""Operations around every request: the log line, gateway keys, rate limits, CORS,
backpressure, metrics and the health probes."""
