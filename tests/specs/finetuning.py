"""04b_finetuning: the cases its checks are tried against (see tests/specs/__init__.py for the form).

mixed_dataset's contract leaves the random procedure free, so its alternatives draw the replay rows in other
ways than the notebook (Python's random module, a shuffled copy) and must still get full marks. A case imports
what the notebook does not (random, itertools) inside its body, as a student's cell would.
"""
from __future__ import annotations

import torch

from tests.specs import Spec

SPEC = Spec(
    "04b_finetuning",
    depends_on={
        "instruction_labels": set(),
        "mixed_dataset": set(),
    },
    student_modules=("llmcourse.lora_tools", "llmcourse.in_kernel"),
)


# -- instruction_labels -----------------------------------------------------------------------------------

@SPEC.mutant("instruction_labels", hint="Put -100 at each prompt position")
def no_masking(prompt_ids, response_ids):
    input_ids = list(prompt_ids) + list(response_ids)
    return input_ids, list(input_ids)


@SPEC.mutant("instruction_labels", hint="wrong way round")
def masks_the_response_instead(prompt_ids, response_ids):
    return list(prompt_ids) + list(response_ids), list(prompt_ids) + [-100] * len(response_ids)


@SPEC.mutant("instruction_labels", hint="shifted by one")
def shifts_the_labels_by_hand(prompt_ids, response_ids):
    input_ids = list(prompt_ids) + list(response_ids)
    return input_ids, [-100] * (len(prompt_ids) - 1) + list(response_ids) + [-100]


@SPEC.mutant("instruction_labels", hint="The value the loss skips is -100")
def masks_the_prompt_with_the_pad_id(prompt_ids, response_ids):
    return list(prompt_ids) + list(response_ids), [0] * len(prompt_ids) + list(response_ids)


@SPEC.mutant("instruction_labels", hint="don't extend, append to or assign into")
def extends_the_prompt_in_place(prompt_ids, response_ids):
    labels = [-100] * len(prompt_ids) + list(response_ids)
    prompt_ids.extend(response_ids)
    return prompt_ids, labels


@SPEC.mutant("instruction_labels", hint="not tensors")
def returns_tensors(prompt_ids, response_ids):
    return (torch.tensor(list(prompt_ids) + list(response_ids)),
            torch.tensor([-100] * len(prompt_ids) + list(response_ids)))


@SPEC.alternative("instruction_labels")
def unpacked_into_new_lists(prompt_ids, response_ids):
    return [*prompt_ids, *response_ids], [*(-100 for _ in prompt_ids), *response_ids]


@SPEC.alternative("instruction_labels")
def through_a_tensor(prompt_ids, response_ids):
    ids = torch.tensor([*prompt_ids, *response_ids], dtype=torch.long)
    labels = ids.clone()
    labels[:len(prompt_ids)] = -100
    return ids.tolist(), labels.tolist()


@SPEC.alternative("instruction_labels")
def chained(prompt_ids, response_ids):
    import itertools

    return (list(itertools.chain(prompt_ids, response_ids)),
            list(itertools.chain(itertools.repeat(-100, len(prompt_ids)), response_ids)))


@SPEC.inputs_of("instruction_labels")
def instruction_labels_inputs(gen):
    yield ([5, 17, 9, 40], [23, 8, 2]), {}
    yield ([], [4, 2]), {}
    yield ([4, 5], []), {}
    yield ([], []), {}
    for _ in range(10):
        n, m = torch.randint(0, 50, (2,), generator=gen).tolist()
        yield (torch.randint(0, 1659, (n,), generator=gen).tolist(),
               torch.randint(0, 1659, (m,), generator=gen).tolist()), {}
    yield (), {"prompt_ids": [1, 2], "response_ids": [3]}


# -- mixed_dataset ------------------------------------------------------------------------------------------

@SPEC.mutant("mixed_dataset", hint="not round(f * n)")
def fraction_of_the_task_rows(task_rows, replay_rows, replay_fraction, seed=0):
    if not 0 <= replay_fraction < 1:
        raise ValueError("replay_fraction must be in [0, 1)")
    k = round(replay_fraction * len(task_rows))
    if k > len(replay_rows):
        raise ValueError("not enough replay rows")
    chosen = torch.randperm(len(replay_rows), generator=torch.Generator().manual_seed(seed))[:k].tolist()
    return list(task_rows) + [replay_rows[i] for i in chosen]


@SPEC.mutant("mixed_dataset", hint="none is replaced")
def replaces_task_rows(task_rows, replay_rows, replay_fraction, seed=0):
    if not 0 <= replay_fraction < 1:
        raise ValueError("replay_fraction must be in [0, 1)")
    k = round(replay_fraction * len(task_rows))
    if k > len(replay_rows):
        raise ValueError("not enough replay rows")
    chosen = torch.randperm(len(replay_rows), generator=torch.Generator().manual_seed(seed))[:k].tolist()
    return list(task_rows[:len(task_rows) - k]) + [replay_rows[i] for i in chosen]


@SPEC.mutant("mixed_dataset", hint="Draw the replay rows at random")
def the_first_replay_rows(task_rows, replay_rows, replay_fraction, seed=0):
    if not 0 <= replay_fraction < 1:
        raise ValueError("replay_fraction must be in [0, 1)")
    k = round(replay_fraction * len(task_rows) / (1 - replay_fraction))
    if k > len(replay_rows):
        raise ValueError("not enough replay rows")
    return list(task_rows) + list(replay_rows[:k])


@SPEC.mutant("mixed_dataset", hint="never from the global random state")
def seed_ignored(task_rows, replay_rows, replay_fraction, seed=0):
    import random

    if not 0 <= replay_fraction < 1:
        raise ValueError("replay_fraction must be in [0, 1)")
    k = round(replay_fraction * len(task_rows) / (1 - replay_fraction))
    if k > len(replay_rows):
        raise ValueError("not enough replay rows")
    return list(task_rows) + random.sample(list(replay_rows), k)


@SPEC.mutant("mixed_dataset", hint="Draw without replacement")
def drawn_with_replacement(task_rows, replay_rows, replay_fraction, seed=0):
    import random

    if not 0 <= replay_fraction < 1:
        raise ValueError("replay_fraction must be in [0, 1)")
    k = round(replay_fraction * len(task_rows) / (1 - replay_fraction))
    if k > len(replay_rows):
        raise ValueError("not enough replay rows")
    return list(task_rows) + random.Random(seed).choices(list(replay_rows), k=k)


@SPEC.mutant("mixed_dataset", hint="not before them")
def replay_rows_first(task_rows, replay_rows, replay_fraction, seed=0):
    if not 0 <= replay_fraction < 1:
        raise ValueError("replay_fraction must be in [0, 1)")
    k = round(replay_fraction * len(task_rows) / (1 - replay_fraction))
    if k > len(replay_rows):
        raise ValueError("not enough replay rows")
    chosen = torch.randperm(len(replay_rows), generator=torch.Generator().manual_seed(seed))[:k].tolist()
    return [replay_rows[i] for i in chosen] + list(task_rows)


@SPEC.mutant("mixed_dataset", hint="don't extend, shuffle or pop")
def extends_the_task_rows_in_place(task_rows, replay_rows, replay_fraction, seed=0):
    if not 0 <= replay_fraction < 1:
        raise ValueError("replay_fraction must be in [0, 1)")
    k = round(replay_fraction * len(task_rows) / (1 - replay_fraction))
    if k > len(replay_rows):
        raise ValueError("not enough replay rows")
    chosen = torch.randperm(len(replay_rows), generator=torch.Generator().manual_seed(seed))[:k].tolist()
    task_rows.extend(replay_rows[i] for i in chosen)
    return task_rows


@SPEC.mutant("mixed_dataset", hint="raise ValueError")
def never_refuses(task_rows, replay_rows, replay_fraction, seed=0):
    k = max(0, min(round(replay_fraction * len(task_rows) / (1 - replay_fraction)), len(replay_rows)))
    chosen = torch.randperm(len(replay_rows), generator=torch.Generator().manual_seed(seed))[:k].tolist()
    return list(task_rows) + [replay_rows[i] for i in chosen]


@SPEC.alternative("mixed_dataset")
def with_random_sample(task_rows, replay_rows, replay_fraction, seed=0):
    import random

    if replay_fraction < 0 or replay_fraction >= 1:
        raise ValueError(f"replay_fraction {replay_fraction} is not in [0, 1)")
    k = int(replay_fraction * len(task_rows) / (1 - replay_fraction) + 0.5)
    if k > len(replay_rows):
        raise ValueError(f"{k} replay rows needed, {len(replay_rows)} given")
    return [*task_rows, *random.Random(seed).sample(list(replay_rows), k)]


@SPEC.alternative("mixed_dataset")
def shuffled_copy(task_rows, replay_rows, replay_fraction, seed=0):
    import random

    if not 0.0 <= replay_fraction < 1.0:
        raise ValueError("replay_fraction must be at least 0 and below 1")
    total = len(task_rows) / (1 - replay_fraction)
    k = round(total - len(task_rows))
    if k > len(replay_rows):
        raise ValueError("too few replay rows")
    pool = list(replay_rows)
    random.Random(f"replay-{seed}").shuffle(pool)
    return list(task_rows) + pool[:k]


@SPEC.inputs_of("mixed_dataset")
def mixed_dataset_inputs(gen):
    task = [{"input_ids": [i, i + 1], "labels": [-100, i + 1]} for i in range(10)]
    replay = [{"input_ids": [100 + i], "labels": [100 + i]} for i in range(25)]
    for f in (0.0, 0.1, 0.25, 0.5, 0.7):
        for seed in (0, 1, 7):
            yield (task, replay, f), {"seed": seed}
    yield (task, replay, 0.2), {}
    yield (task, replay, 0.8), {}  # 40 needed, 25 given: ValueError
    yield (task, replay, 1.0), {}
    yield (task, replay, -0.5), {}
    yield ([], replay, 0.5), {}
    yield (task, [], 0.0), {}
    yield (list(range(30)), list(range(100, 200)), 0.3), {"seed": 3}
