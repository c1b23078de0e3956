from __future__ import annotations

import itertools

import torch

from crossrank.engine.batching import collate, pack_by_tokens
from crossrank.engine.tokenization import PairFeatures


def test_batches_respect_the_token_budget_and_cover_every_input_once():
    lengths = [5, 300, 17, 64, 64, 2, 900, 128, 33, 256] * 7
    batches = pack_by_tokens(lengths, max_tokens=1024)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest <= 1024
    # sorted by length: short inputs are never padded up to much longer ones
    for batch, following in itertools.pairwise(batches):
        assert min(lengths[i] for i in batch) >= max(lengths[i] for i in following)


def test_an_input_over_the_budget_gets_its_own_batch():
    assert pack_by_tokens([4000, 10, 10], max_tokens=1000) == [[0], [1, 2]]


def test_collate_right_pads_to_the_longest_input():
    features = [PairFeatures([1, 2, 3], [0, 0, 1], 0), PairFeatures([4], [0], 1)]
    batch = collate(features, pad_id=9, device=torch.device("cpu"))
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]
