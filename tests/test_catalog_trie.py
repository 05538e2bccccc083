"""Trie-constrained beam search: only real catalog titles, ranked by the LM's probability of the title."""

import numpy as np
import peft
import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from peftrec.errors import PeftrecError
from peftrec.host_reads import mark, recording_host_reads
from peftrec.tasks.catalog_trie import (
    CatalogConstraint,
    CatalogTrie,
    constrained_beam_search,
    to_left_padding,
)

EOS, PAD, VOCAB = 1, 0, 24
# entry 0 is a prefix of entry 1; entries 0-2 and 4 share the first token; entries 2 and 4 share a title.
HAND = [[5, 6], [5, 6, 7], [5, 8], [9], [5, 8]]
INF = float("-inf")


def tiny_llama(seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=PAD,
        eos_token_id=EOS,
        **overrides,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def llama() -> LlamaForCausalLM:
    return tiny_llama()


def right_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([p + [PAD] * (width - len(p)) for p in prompts])
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    return ids, mask


def title_log_probs(
    model, prompt: list[int], trie: CatalogTrie
) -> dict[tuple[int, ...], tuple[float, float]]:
    """Teacher-forced (sum, mean) log p(title, eos | prompt) of every distinct title, one row each."""
    titles = {tuple(trie.target(e)): e for e in range(len(trie))}
    rows = [prompt + list(t) for t in titles]
    ids, mask = right_padded(rows)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
    scores = {}
    for row, target in enumerate(titles):
        steps = [logp[row, len(prompt) - 1 + k, token].item() for k, token in enumerate(target)]
        scores[titles[target]] = (sum(steps), sum(steps) / len(steps))
    return {trie.entries(trie.target(e)): s for e, s in scores.items()}


# --- the trie --------------------------------------------------------------------------------------


def test_allowed_follows_the_titles_by_hand():
    trie = CatalogTrie(HAND, eos_token_id=EOS)
    assert trie.allowed([]) == [5, 9]
    assert trie.allowed([5]) == [6, 8]
    assert trie.allowed([5, 6]) == [EOS, 7]  # a title ends here and a longer one continues
    assert trie.allowed([5, 6, 7]) == [EOS]
    assert trie.allowed([5, 8]) == [EOS]
    assert trie.allowed([9]) == [EOS]
    assert trie.allowed([4]) == []  # left the trie
    assert trie.allowed([5, 7]) == []
    assert trie.allowed([5, 6, EOS]) == []  # the title is done
    assert trie.allowed([9, EOS, PAD]) == []


def test_entries_and_targets_by_hand():
    trie = CatalogTrie(HAND, eos_token_id=EOS)
    assert trie.entries([5, 6]) == (0,)
    assert trie.entries([5, 6, EOS]) == (0,)
    assert trie.entries([5, 6, EOS, PAD, PAD]) == (0,)
    assert trie.entries([5, 6, 7, EOS]) == (1,)
    assert trie.entries([5, 8, EOS]) == (2, 4)  # one title, two items
    assert trie.entries([9, EOS, 5, 8]) == (3,)  # everything after eos is ignored
    assert trie.entries([5, EOS]) == ()  # a prefix, not a title
    assert trie.entries([4, EOS]) == ()
    assert trie.entries([EOS]) == ()
    assert trie.target(1) == [5, 6, 7, EOS]
    assert trie.target(4) == [5, 8, EOS]
    assert trie.max_length == 4
    assert len(trie) == 5
    assert trie.num_titles == 4
    assert trie.max_token_id == 9
    assert trie.entries_below(trie.node([])) == 5
    assert trie.entries_below(trie.node([5])) == 4
    assert trie.entries_below(trie.node([5, 6])) == 2
    assert trie.path(1) == [0, trie.node([5]), trie.node([5, 6]), trie.node([5, 6, 7])]


@pytest.mark.parametrize(
    ("sequences", "match"),
    [([], "no titles"), ([[3], []], "entry 1 has an empty title"), ([[3, EOS, 4]], "contains the eos token")],
)
def test_bad_catalogs_are_refused(sequences, match):
    with pytest.raises(PeftrecError, match=match):
        CatalogTrie(sequences, eos_token_id=EOS)


def test_from_titles_tokenizes_each_title_without_special_tokens(tiny_plain_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_plain_model_dir)
    titles = ["Good Movie 1", "Good Movie 2", "Bad Movie 1", "Good Movie 1"]
    trie = CatalogTrie.from_titles(titles, tokenizer)
    eos = tokenizer.eos_token_id
    assert trie.eos_token_id == eos == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    for entry, title in enumerate(titles):
        ids = tokenizer(title, add_special_tokens=False)["input_ids"]
        assert trie.target(entry) == ids + [eos]
        assert tokenizer.decode(trie.target(entry)[:-1]) == title
    assert trie.entries(trie.target(0)) == (0, 3)
    assert trie.num_titles == 3
    first = tokenizer(["Good", "Bad"], add_special_tokens=False)["input_ids"]
    assert trie.allowed([]) == sorted({first[0][0], first[1][0]})
    assert CatalogTrie.from_titles(titles, tokenizer, eos_token_id=7).target(2)[-1] == 7


def test_from_titles_refuses_missing_eos_and_empty_titles(tiny_plain_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_plain_model_dir)
    with pytest.raises(PeftrecError, match="entry 1 has an empty title"):
        CatalogTrie.from_titles(["Good Movie 1", ""], tokenizer)

    class NoEos:
        eos_token_id = None

    with pytest.raises(PeftrecError, match="no eos token.*eos_token_id="):
        CatalogTrie.from_titles(["x"], NoEos())


# --- the logits processor --------------------------------------------------------------------------


def constrained(
    constraint: CatalogConstraint, generated: list[list[int]], prompt_length: int = 2, vocab: int = 10
):
    ids = torch.tensor([[11] * prompt_length + g for g in generated], dtype=torch.long)
    scores = torch.arange(len(generated) * vocab, dtype=torch.float).reshape(len(generated), vocab)
    out = constraint(ids, scores)
    allowed = [torch.nonzero(row > INF).flatten().tolist() for row in out]
    kept = out[out > INF]
    assert torch.equal(kept, scores[out > INF])  # allowed scores pass unchanged
    return allowed


def test_constraint_masks_by_hand_with_exclusions():
    trie = CatalogTrie(HAND, eos_token_id=EOS)
    # rows 0-1 are example 0 (excludes entry 0), rows 2-3 example 1 (excludes entries 2 and 4).
    constraint = CatalogConstraint(trie, 2, num_beams=2, excluded=[{0}, {2, 4}])
    assert constrained(constraint, [[5], [9], [5], [4]]) == [
        [6, 8],
        [EOS],
        [6],  # [5, 8] holds only excluded entries: a dead end
        [],  # left the trie: every token -inf
    ]
    assert constrained(constraint, [[5, 6], [5, 8], [5, 6], [9, EOS]]) == [
        [7],  # entry 0 ends here but is excluded; entry 1 continues
        [EOS],
        [EOS, 7],
        [],  # done
    ]
    only_nine_excluded = CatalogConstraint(trie, 3, num_beams=1, excluded=[{3}])
    assert constrained(only_nine_excluded, [[]], prompt_length=3) == [[5]]
    # a title shared by two entries stays allowed while one of them is not excluded
    half = CatalogConstraint(trie, 2, num_beams=1, excluded=[{2}])
    assert constrained(half, [[5, 8]]) == [[EOS]]


def random_generated(rng: np.random.Generator, catalog: list[list[int]], width: int) -> list[int]:
    """``width`` generated tokens: inside a title, a whole title with eos then padding, or off the trie."""
    title = catalog[int(rng.integers(len(catalog)))]
    kind = int(rng.integers(3))
    if kind == 0 and len(title) >= width:
        return title[:width]
    if kind == 1 and len(title) < width:
        return (title + [EOS] + [PAD] * width)[:width]
    # a title's start and then any token: often off the trie, sometimes on it
    return (title[: width - 1] + rng.integers(2, VOCAB, size=width).tolist())[:width]


def next_tokens_by_brute_force(trie: CatalogTrie, excluded: set[int], tokens: list[int]) -> list[int]:
    """The rule from its definition: the next token of every allowed title (eos included) that starts
    with ``tokens``; independent of the trie's nodes and of the constraint's exclusion sets."""
    n = len(tokens)
    targets = (trie.target(entry) for entry in range(len(trie)) if entry not in excluded)
    return sorted({target[n] for target in targets if len(target) > n and list(target[:n]) == tokens})


def test_device_mask_follows_the_rule_for_every_row():
    rng = np.random.default_rng(11)
    inside = total = 0
    for _ in range(40):
        catalog = random_catalog(rng)
        trie = CatalogTrie(catalog, eos_token_id=EOS)
        examples, num_beams = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        excluded = [set(np.flatnonzero(rng.random(len(catalog)) < 0.4).tolist()) for _ in range(examples)]
        constraint = CatalogConstraint(trie, 2, num_beams=num_beams, excluded=excluded)
        plain = CatalogConstraint(trie, 2, num_beams=num_beams)
        width = int(rng.integers(0, 6))
        generated = [random_generated(rng, catalog, width) for _ in range(examples * num_beams)]
        for exclusions, mask in (
            (excluded, constrained(constraint, generated, vocab=VOCAB)),
            ([set()] * examples, constrained(plain, generated, vocab=VOCAB)),
        ):
            for row, (tokens, allowed) in enumerate(zip(generated, mask, strict=True)):
                expected = next_tokens_by_brute_force(trie, exclusions[row // num_beams], tokens)
                assert allowed == expected, (catalog, excluded, tokens)
                inside += bool(expected)
                total += 1
    assert inside > total / 3  # many checks are of rows with tokens left to write, not of dead rows


def test_the_mask_reads_nothing_back_from_the_device():
    trie = CatalogTrie(HAND, eos_token_id=EOS)
    constraint = CatalogConstraint(trie, 2, num_beams=2, excluded=[{0}, {2, 4}])
    ids = torch.tensor([[11, 11, 5, 6], [11, 11, 5, 8], [11, 11, 5, 6], [11, 11, 9, EOS]])
    marked = mark({"ids": ids, "scores": torch.zeros(4, 10)})
    with recording_host_reads() as log:
        out = constraint(marked["ids"], marked["scores"])
    assert log.reads == []
    assert [torch.nonzero(row > INF).flatten().tolist() for row in out] == [[7], [EOS], [EOS, 7], []]


def test_constraint_refuses_bad_inputs():
    trie = CatalogTrie(HAND, eos_token_id=EOS)
    with pytest.raises(PeftrecError, match=r"excluded entries \[5\] are not in the catalog"):
        CatalogConstraint(trie, 2, num_beams=1, excluded=[{5}])
    with pytest.raises(PeftrecError, match="token id 9 but the model has 8 logits"):
        CatalogConstraint(trie, 1, num_beams=1)(torch.tensor([[3]]), torch.zeros(1, 8))
    with pytest.raises(PeftrecError, match="excluded lists 1 examples but the batch has 2"):
        CatalogConstraint(trie, 1, num_beams=1, excluded=[{0}])(torch.tensor([[3], [3]]), torch.zeros(2, 10))


def test_to_left_padding_by_hand():
    ids = torch.tensor([[1, 2, 3], [4, 5, 0], [6, 0, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]])
    left_ids, left_mask = to_left_padding(ids, mask)
    assert left_ids.tolist() == [[1, 2, 3], [0, 4, 5], [0, 0, 6]]
    assert left_mask.tolist() == [[1, 1, 1], [0, 1, 1], [0, 0, 1]]
    with pytest.raises(PeftrecError, match="not right-padded"):
        to_left_padding(ids, torch.tensor([[1, 1, 1], [0, 1, 1], [1, 0, 0]]))
    with pytest.raises(PeftrecError, match="no tokens"):
        to_left_padding(ids, torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]]))


# --- the search ------------------------------------------------------------------------------------


def random_catalog(rng: np.random.Generator) -> list[list[int]]:
    count = int(rng.integers(5, 41))
    return [rng.integers(2, 22, size=int(rng.integers(1, 7))).tolist() for _ in range(count)]


def random_prompts(rng: np.random.Generator, count: int) -> list[list[int]]:
    return [rng.integers(2, VOCAB, size=int(rng.integers(2, 7))).tolist() for _ in range(count)]


def test_search_returns_only_distinct_allowed_catalog_titles(llama):
    rng = np.random.default_rng(0)
    for _ in range(30):
        catalog = random_catalog(rng)
        trie = CatalogTrie(catalog, eos_token_id=EOS)
        by_title: dict[tuple[int, ...], list[int]] = {}
        for entry, title in enumerate(catalog):
            by_title.setdefault(tuple(title), []).append(entry)
        prompts = random_prompts(rng, 3)
        excluded = [set(np.flatnonzero(rng.random(len(catalog)) < 0.3).tolist()) for _ in prompts]
        num_beams = int(rng.integers(1, 9))
        num_return = int(rng.integers(1, num_beams + 1))
        ids, mask = right_padded(prompts)
        found = constrained_beam_search(
            llama,
            ids,
            mask,
            trie,
            num_beams=num_beams,
            num_return=num_return,
            pad_token_id=PAD,
            excluded=excluded,
        )
        assert len(found) == len(prompts)
        for ranked, skip in zip(found, excluded, strict=True):
            assert len(ranked) <= num_return
            titles = [tuple(catalog[entries[0]]) for entries in ranked]
            assert len(set(titles)) == len(titles)
            for title, entries in zip(titles, ranked, strict=True):
                assert list(entries) == [e for e in by_title[title] if e not in skip]
                assert entries and not skip & set(entries)
            # with beams to spare, the search must fill its list from the titles left to this example
            producible = sum(1 for es in by_title.values() if any(e not in skip for e in es))
            if num_beams >= producible:
                assert len(ranked) == min(num_return, producible)

        # with one beam per title and no exclusions the search enumerates the whole catalog
        every = constrained_beam_search(
            llama, ids, mask, trie, num_beams=trie.num_titles, num_return=trie.num_titles, pad_token_id=PAD
        )
        for ranked in every:
            assert sorted(ranked) == sorted(tuple(es) for es in by_title.values())


def test_titles_come_back_in_order_of_their_exact_log_probability(llama):
    rng = np.random.default_rng(1)
    length_matters = False
    for _ in range(4):
        catalog = random_catalog(rng)
        trie = CatalogTrie(catalog, eos_token_id=EOS)
        prompt = random_prompts(rng, 1)[0]
        ids, mask = right_padded([prompt])
        (ranked,) = constrained_beam_search(
            llama, ids, mask, trie, num_beams=trie.num_titles, num_return=trie.num_titles, pad_token_id=PAD
        )
        scores = title_log_probs(llama, prompt, trie)
        assert sorted(ranked) == sorted(scores)
        sums = [scores[entries][0] for entries in ranked]
        assert sums[0] == pytest.approx(max(s for s, _ in scores.values()), abs=1e-5)
        assert all(a >= b - 1e-5 for a, b in zip(sums, sums[1:], strict=False))
        # the order differs from the length-normalised one somewhere: the test tells the two apart
        by_mean = sorted(scores, key=lambda e: -scores[e][1])
        length_matters |= by_mean != ranked
    assert length_matters


def test_a_title_made_likely_comes_first_and_history_is_skipped():
    model = tiny_llama(seed=3)
    catalog = [[4, 5], [6, 7, 8], [9], [10, 11], [12, 4]]
    trie = CatalogTrie(catalog, eos_token_id=EOS)
    # An output bias on entry 1's tokens and eos makes its title far more likely than any other.
    head = torch.nn.Linear(model.config.hidden_size, VOCAB, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[[6, 7, 8, EOS]] = 8.0
    model.lm_head = head
    prompt = [2, 3, 13]
    ids, mask = right_padded([prompt])
    scores = title_log_probs(model, prompt, trie)
    order = sorted(scores, key=lambda e: -scores[e][0])
    assert order[0] == (1,)
    # one beam per title: the search is exact, so the top 3 must be the 3 best by log-probability
    (ranked,) = constrained_beam_search(model, ids, mask, trie, num_beams=5, num_return=3, pad_token_id=PAD)
    assert ranked == order[:3]
    (without,) = constrained_beam_search(
        model, ids, mask, trie, num_beams=5, num_return=3, pad_token_id=PAD, excluded=[{1}]
    )
    assert without == order[1:4]


def peft_variant(kind: str, initializer_range: float = 0.02):
    model = tiny_llama(seed=0, initializer_range=initializer_range)
    if kind == "plain":
        return model
    configs = {
        "lora": peft.LoraConfig(
            task_type="CAUSAL_LM", r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        ),
        "prefix": peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
        "prompt": peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
    }
    torch.manual_seed(1)
    return peft.get_peft_model(model, configs[kind]).eval()


@pytest.mark.parametrize("kind", ["plain", "lora", "prefix", "prompt"])
def test_a_row_gets_the_same_titles_alone_and_in_a_padded_batch(kind):
    # Larger weights than the default init spread the logits, so a padding error changes the ranking
    # (at 0.02 the outputs are nearly uniform and prompt tuning's padding shift went unnoticed).
    model = peft_variant(kind, initializer_range=0.2)
    rng = np.random.default_rng(2)
    catalog = random_catalog(np.random.default_rng(5))
    trie = CatalogTrie(catalog, eos_token_id=EOS)
    prompts = [rng.integers(2, VOCAB, size=n).tolist() for n in (2, 7, 4, 7)]
    excluded = [{0, 1}, set(), {2}, {3, 4, 5}]
    ids, mask = right_padded(prompts)
    together = constrained_beam_search(
        model, ids, mask, trie, num_beams=6, num_return=4, pad_token_id=PAD, excluded=excluded
    )
    for prompt, skip, ranked in zip(prompts, excluded, together, strict=True):
        one_ids, one_mask = right_padded([prompt])
        (alone,) = constrained_beam_search(
            model, one_ids, one_mask, trie, num_beams=6, num_return=4, pad_token_id=PAD, excluded=[skip]
        )
        assert ranked == alone
        assert len(ranked) == 4


@pytest.mark.parametrize("kind", ["lora", "prefix"])
def test_a_peft_model_ranks_titles_by_its_own_forward_pass(kind):
    # Multi-token titles: a head whose cache goes wrong after the first generated token (prefix tuning
    # on transformers 5.24 with peft 0.21.2) ranks them differently from a plain forward pass.
    model = peft_variant(kind, initializer_range=0.2)
    rng = np.random.default_rng(7)
    catalog = [rng.integers(2, 22, size=3).tolist() for _ in range(12)]
    trie = CatalogTrie(catalog, eos_token_id=EOS)
    prompt = [4, 9, 13, 2]
    ids, mask = right_padded([prompt])
    (ranked,) = constrained_beam_search(
        model, ids, mask, trie, num_beams=trie.num_titles, num_return=trie.num_titles, pad_token_id=PAD
    )
    scores = title_log_probs(model, prompt, trie)
    assert ranked == sorted(scores, key=lambda e: -scores[e][0])


def test_prefix_generation_is_refused_where_peft_misreads_the_cache(monkeypatch):
    prefix, lora = peft_variant("prefix"), peft_variant("lora")
    trie = CatalogTrie(HAND, eos_token_id=EOS)
    ids, mask = right_padded([[2, 3]])
    monkeypatch.setattr(transformers, "__version__", "5.24.0")
    monkeypatch.setattr(peft, "__version__", "0.21.2")
    with pytest.raises(PeftrecError, match=r"pip install 'transformers<5\.24'"):
        constrained_beam_search(prefix, ids, mask, trie, num_beams=3, num_return=2, pad_token_id=PAD)
    assert constrained_beam_search(lora, ids, mask, trie, num_beams=3, num_return=2, pad_token_id=PAD)
    monkeypatch.setattr(peft, "__version__", "0.22.0")  # a peft that reads the new name is let through
    assert constrained_beam_search(prefix, ids, mask, trie, num_beams=3, num_return=2, pad_token_id=PAD)


def test_search_leaves_the_callers_model_as_it_was():
    # dropout 0.5 would change the scores if the search ran in training mode
    model = tiny_llama(seed=4, attention_dropout=0.5)
    catalog = random_catalog(np.random.default_rng(6))
    trie = CatalogTrie(catalog, eos_token_id=EOS)
    ids, mask = right_padded([[2, 3, 4], [5, 6]])
    expected = constrained_beam_search(model, ids, mask, trie, num_beams=5, num_return=5, pad_token_id=PAD)

    config = GenerationConfig(do_sample=True, temperature=0.3, repetition_penalty=5.0, length_penalty=2.0)
    model.generation_config = config
    model.train()
    for _ in range(2):
        got = constrained_beam_search(model, ids, mask, trie, num_beams=5, num_return=5, pad_token_id=PAD)
        assert got == expected
    assert model.training and all(m.training for m in model.modules())
    assert model.generation_config is config


def test_search_reads_the_device_twice_a_batch_outside_generate(llama):
    trie = CatalogTrie(HAND, eos_token_id=EOS)
    ids, mask = right_padded([[2, 3, 4], [5, 6]])
    marked = mark({"ids": ids, "mask": mask})
    with recording_host_reads() as log:
        constrained_beam_search(
            llama,
            marked["ids"],
            marked["mask"],
            trie,
            num_beams=3,
            num_return=2,
            pad_token_id=PAD,
            excluded=[{0}, set()],
        )
    ours = [site.split(":")[0] for _, _, site in log.reads if site.startswith("peftrec/")]
    # the prompt lengths with the padding checks, and the generated titles at the end: none per decoding step
    assert ours == ["peftrec/tasks/catalog_trie.py"] * 2


def test_search_refuses_more_returns_than_beams(llama):
    trie = CatalogTrie(HAND, eos_token_id=EOS)
    ids, mask = right_padded([[2, 3]])
    with pytest.raises(PeftrecError, match="num_return=3 must be between 1 and num_beams=2"):
        constrained_beam_search(llama, ids, mask, trie, num_beams=2, num_return=3, pad_token_id=PAD)
    with pytest.raises(PeftrecError, match="excluded has 2 entries for a batch of 1"):
        constrained_beam_search(
            llama, ids, mask, trie, num_beams=2, num_return=2, pad_token_id=PAD, excluded=[set(), set()]
        )


def test_search_with_a_real_tokenizer_writes_catalog_titles(tiny_plain_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_plain_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_plain_model_dir).eval()
    titles = [f"Good Movie {k}" for k in range(8)] + [f"Bad Movie {k}" for k in range(8)]
    trie = CatalogTrie.from_titles(titles, tokenizer)
    batch = tokenizer(["A user rated movies. Liked:", "Answer:"], padding=True, return_tensors="pt")
    found = constrained_beam_search(
        model,
        batch["input_ids"],
        batch["attention_mask"],
        trie,
        num_beams=4,
        num_return=4,
        pad_token_id=tokenizer.pad_token_id,
        excluded=[{0, 8}, set()],
    )
    for ranked, skip in zip(found, [{0, 8}, set()], strict=True):
        assert len(ranked) == 4  # eos doubles as padding here: finished beams must still be read right
        assert all(len(entries) == 1 and 0 <= entries[0] < len(titles) for entries in ranked)
        assert len(set(ranked)) == 4
        assert not skip & {entries[0] for entries in ranked}
