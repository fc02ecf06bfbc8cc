from edgeproxy.topkeys import TopKeys


def test_heavy_keys_survive_a_stream_of_one_off_keys():
    top = TopKeys(capacity=16)
    for i in range(1000):
        top.add(f"once-{i}")
        if i % 4 == 0:
            top.add("hot")
        if i % 10 == 0:
            top.add("warm")
    ranked = top.top(2)
    assert [key for key, _ in ranked] == ["hot", "warm"]
    assert ranked[0][1] >= 250
    assert len(top.top(100)) == 16
