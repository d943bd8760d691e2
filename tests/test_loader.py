"""BatchLoader: seeded shuffling, DDP sharding, dynamic binarization and mid-epoch resume."""

import torch

from vae_lightning.data.loader import BatchLoader, TensorSource


def source(n=50):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return TensorSource(images, torch.arange(n))


def ids(batches):
    return torch.cat([y for _, y in batches]).tolist()


def test_each_epoch_is_a_new_seeded_permutation():
    loader = BatchLoader(source(), torch.arange(50), 10, shuffle=True, seed=3)
    e0, e1 = ids(loader), ids(loader)
    assert sorted(e0) == sorted(e1) == list(range(50)) and e0 != e1
    again = BatchLoader(source(), torch.arange(50), 10, shuffle=True, seed=3)
    assert ids(again) == e0 and ids(again) == e1


def test_ranks_see_disjoint_shares_that_cover_the_split():
    shares = [ids(BatchLoader(source(), torch.arange(50), 8, shuffle=False, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(shares, [])) == list(range(50))  # evaluation: exact split, no padding
    train = [BatchLoader(source(), torch.arange(50), 1, shuffle=True, rank=r, world_size=3) for r in range(3)]
    assert len({len(t) for t in train}) == 1  # training: equal shares so ranks step together
    assert set(sum((ids(t) for t in train), [])) == set(range(50))


def test_resume_mid_epoch_continues_with_the_same_batches():
    full = BatchLoader(source(), torch.arange(50), 7, shuffle=True, drop_last=True, seed=1, binarize="dynamic")
    straight = [list(full) for _ in range(2)]
    part = BatchLoader(source(), torch.arange(50), 7, shuffle=True, drop_last=True, seed=1, binarize="dynamic")
    it = iter(part)
    seen = [next(it) for _ in range(3)]
    state = part.state_dict()
    resumed = BatchLoader(source(), torch.arange(50), 7, shuffle=True, drop_last=True, seed=1, binarize="dynamic")
    resumed.load_state_dict(state)
    rest = list(resumed)
    got = seen + rest + list(resumed)
    want = straight[0] + straight[1]
    assert len(got) == len(want)
    for (xa, ya), (xb, yb) in zip(got, want):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


def test_dynamic_binarization_gives_binary_pixels_with_the_right_mean():
    images = torch.full((2000, 1, 4, 4), 64, dtype=torch.uint8)  # intensity 0.251
    loader = BatchLoader(TensorSource(images, torch.zeros(2000)), torch.arange(2000), 500, binarize="dynamic")
    x = torch.cat([b for b, _ in loader])
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert abs(x.mean().item() - 64 / 255) < 0.01
