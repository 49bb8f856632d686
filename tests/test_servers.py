"""The test fixtures themselves: a real Redis and a real RTSP stream."""

from __future__ import annotations

import av


def test_rtsp_fixture_stream_decodes_over_tcp(rtsp_server):
    container = av.open(rtsp_server.url("cam"), options={"rtsp_transport": "tcp"}, timeout=(10, 10))
    try:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) == 30:
                break
    finally:
        container.close()
    assert len(frames) == 30
    assert frames[0].shape == (360, 640, 3)
    assert frames[-1].std() > 10  # real picture content, not a blank frame


def test_redis_fixture_accepts_streams_and_consumer_groups(redis_client):
    redis_client.xgroup_create("facegate:test", "readers", id="0", mkstream=True)
    ids = [redis_client.xadd("facegate:test", {"n": str(i)}) for i in range(3)]
    got = redis_client.xreadgroup("readers", "c1", {"facegate:test": ">"}, count=10)
    entries = got[0][1]
    assert [e[0] for e in entries] == ids
    assert [e[1][b"n"] for e in entries] == [b"0", b"1", b"2"]
    assert redis_client.xack("facegate:test", "readers", *ids) == 3
    assert redis_client.xpending("facegate:test", "readers")["pending"] == 0
