from dicomrt.identifiers import new_uid, short_hash


def test_new_uid_is_deterministic_with_entropy_and_random_without():
    assert new_uid("a", 1) == new_uid("a", 1)
    assert new_uid("a", 1) != new_uid("a", 2)
    assert new_uid() != new_uid()
    assert new_uid("a", 1).startswith("2.25.")
    assert len(new_uid("a", 1)) <= 64
    assert new_uid("a", prefix="1.2.3.") == new_uid("a", prefix="1.2.3.")


def test_short_hash_is_stable_and_short():
    assert short_hash("1.2.3") == short_hash("1.2.3")
    assert len(short_hash("1.2.3")) == 10
