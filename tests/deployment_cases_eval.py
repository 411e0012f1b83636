"""Mutants and alternatives of 07_deployment (eval exercises), used by tests/test_deployment_checks.py.

Each source runs after the notebook's cells, in its namespace (torch, nn, F, math, Counter, copy are there), and
redefines one solution function.
"""
from __future__ import annotations

# -- perplexity ----------------------------------------------------------------------------------------

_PPL = '''
def perplexity(model, tokenizer, texts, max_length=256):
    if isinstance(texts, str):
        texts = [texts]
    total_nll, total_tokens, per_text = 0.0, 0, []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, TRUNCATE)["input_ids"]
            if len(ids) < 2:
                continue
            ids = torch.tensor([ids])
            logits = model(input_ids=ids).logits[0, LOGITS].float()
            nll = F.cross_entropy(logits, ids[0, TARGETS], reduction="sum").item()
            total_nll += nll
            total_tokens += COUNT
            per_text.append((nll, ids.shape[1] - 1))
    return RESULT
'''


def _ppl(truncate="truncation=True, max_length=max_length", logits=":-1", targets="1:", count="ids.shape[1] - 1",
         result="math.exp(total_nll / total_tokens)") -> str:
    return (_PPL.replace("TRUNCATE", truncate).replace("LOGITS", logits).replace("TARGETS", targets)
            .replace("COUNT", count).replace("RESULT", result))


PERPLEXITY_MUTANTS = {
    "mean of per-text perplexities": _ppl(result="sum(math.exp(n / k) for n, k in per_text) / len(per_text)"),
    "mean of per-text losses": _ppl(result="math.exp(sum(n / k for n, k in per_text) / len(per_text))"),
    "logits not shifted": _ppl(logits=":", targets=":", count="ids.shape[1]"),
    "no exp (returns the loss)": _ppl(result="total_nll / total_tokens"),
    "log base 2": _ppl(result="2 ** (total_nll / total_tokens)"),
    "max_length ignored": _ppl(truncate="truncation=False"),
    "the first token counted too": _ppl(count="ids.shape[1]"),
    "padding counted in a batched version": '''
def perplexity(model, tokenizer, texts, max_length=256):
    if isinstance(texts, str):
        texts = [texts]
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=batch["input_ids"]).loss
    return math.exp(loss.item())
''',
}

PERPLEXITY_ALTERNATIVES = {
    "batched, right padding and an attention mask": '''
def perplexity(model, tokenizer, texts, max_length=256):
    if isinstance(texts, str):
        texts = [texts]
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    scored = mask[:, 1:] & mask[:, :-1]  # right padding: a real token after a real token
    if not scored.any():
        raise ValueError("nothing to predict")
    nll = F.cross_entropy(logits[scored], ids[:, 1:][scored], reduction="sum")
    return math.exp(nll.item() / scored.sum().item())
''',
    "the model's labels= loss weighted by token counts": '''
def perplexity(model, tokenizer, texts, max_length=256):
    texts = [texts] if isinstance(texts, str) else list(texts)
    losses, counts = [], []
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
        n = enc["input_ids"].shape[1] - 1
        if n > 0:
            with torch.no_grad():
                losses.append(model(input_ids=enc["input_ids"], labels=enc["input_ids"]).loss.double() * n)
            counts.append(n)
    return torch.exp(torch.stack(losses).sum() / sum(counts)).item()
''',
}

# -- BLEU ----------------------------------------------------------------------------------------------

_BLEU = '''
def bleu(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]

    def ngrams(words, n):
        return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))

    orders = ORDERS
    matches, totals = [0] * len(orders), [0] * len(orders)
    cand_len = ref_len = 0
    sentence_scores = []
    for cand, refs in zip(candidate, references):
        words = SPLIT(cand)
        ref_words = [SPLIT(r) for r in refs]
        cand_len += len(words)
        ref_len += REF_LEN
        sentence = []
        for i, n in enumerate(orders):
            most = Counter()
            for r in ref_words:
                most CLIP ngrams(r, n)
            matched = sum(MATCHED for g, count in ngrams(words, n).items())
            matches[i] += matched
            totals[i] += max(len(words) - n + 1, 0)
            sentence.append((matched, max(len(words) - n + 1, 0)))
        sentence_scores.append(sentence)
    if min(matches) == 0:
        return 0.0
    log_precision = MEAN
    penalty = PENALTY
    return 100 * penalty * math.exp(log_precision)
'''


def _bleu(orders="range(1, max_n + 1)", split="str.split", ref_len="min((len(r) for r in ref_words), "
          "key=lambda n: (abs(n - len(words)), n))", clip="|=", matched="min(count, most[g])",
          mean="sum(math.log(m / t) for m, t in zip(matches, totals)) / len(orders)",
          penalty="1.0 if cand_len > ref_len else math.exp(1 - ref_len / cand_len)") -> str:
    return (_BLEU.replace("ORDERS", orders).replace("SPLIT", split).replace("REF_LEN", ref_len)
            .replace("CLIP", clip).replace("MATCHED", matched).replace("MEAN", mean).replace("PENALTY", penalty))


BLEU_MUTANTS = {
    "no clipping": _bleu(matched="count if g in most else 0"),
    "no brevity penalty": _bleu(penalty="1.0"),
    "brevity penalty from the longest reference": _bleu(ref_len="max(len(r) for r in ref_words)"),
    "brevity penalty from the shortest reference": _bleu(ref_len="min(len(r) for r in ref_words)"),
    "arithmetic mean of the precisions": _bleu(mean="math.log(sum(m / t for m, t in zip(matches, totals)) / len(orders))"),
    "clipping summed over the references": _bleu(clip="+="),
    "n-grams only up to 3": _bleu(orders="range(1, min(max_n, 3) + 1)"),
    "lower-cased words": _bleu(split="(lambda s: s.lower().split())"),
    "the average of sentence BLEUs": '''
_corpus_bleu = bleu

def bleu(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    return sum(_corpus_bleu([c], [r], max_n) for c, r in zip(candidate, references)) / len(candidate)
''',
}

BLEU_ALTERNATIVES = {
    "Counter & and a loop over n outside the sentences": '''
def bleu(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    pairs = [(c.split(), [r.split() for r in refs]) for c, refs in zip(candidate, references)]
    c_len = sum(len(c) for c, _ in pairs)
    r_len = 0
    for c, refs in pairs:
        lengths = sorted(len(r) for r in refs)  # sorted: the first closest one is the shorter on a tie
        r_len += min(lengths, key=lambda n: abs(n - len(c)))
    log_sum = 0.0
    for n in range(1, max_n + 1):
        hit = total = 0
        for c, refs in pairs:
            grams = Counter(zip(*[c[i:] for i in range(n)]))
            best = Counter()
            for r in refs:
                best = best | Counter(zip(*[r[i:] for i in range(n)]))
            hit += sum((grams & best).values())
            total += sum(grams.values())
        if hit == 0:
            return 0.0
        log_sum += math.log(hit) - math.log(total)
    bp = math.exp(min(0.0, 1 - r_len / c_len))
    return 100 * bp * math.exp(log_sum / max_n)
''',
    "math.prod of the precisions": '''
def bleu(candidate, references, max_n=4):
    if isinstance(candidate, str):
        candidate, references = [candidate], [references]
    hits, totals = [0] * max_n, [0] * max_n
    c_total = r_total = 0
    for cand, refs in zip(candidate, references):
        words, ref_words = cand.split(), [r.split() for r in refs]
        c_total += len(words)
        r_total += sorted((abs(len(r) - len(words)), len(r)) for r in ref_words)[0][1]
        for n in range(1, max_n + 1):
            grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
            for g, k in grams.items():
                hits[n - 1] += min(k, max(sum(1 for i in range(len(r) - n + 1) if tuple(r[i:i + n]) == g)
                                          for r in ref_words))
            totals[n - 1] += sum(grams.values())
    if 0 in hits:
        return 0.0
    precision = math.prod(h / t for h, t in zip(hits, totals)) ** (1 / max_n)
    bp = 1.0 if c_total > r_total else math.exp(1 - r_total / c_total)
    return 100 * bp * precision
''',
}

# -- choice_logprob -------------------------------------------------------------------------------------

_CHOICE = '''
def choice_logprob(model, tokenizer, prompt, choice):
    prompt_ids = tokenizer(prompt)["input_ids"]
    choice_ids = tokenizer(choice, CHOICE_SPECIAL)["input_ids"]
    ids = torch.tensor([prompt_ids + choice_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    log_probs = LOG_PROBS
    start = len(prompt_ids) - 1
    picked = log_probs[START:].gather(1, ids[0, TARGET_START:][:, None])
    return RESULT
'''


def _choice(special="add_special_tokens=False", log_probs="F.log_softmax(logits, dim=-1)", start="start",
            target_start="start + 1", result="picked.sum().item()") -> str:
    return (_CHOICE.replace("CHOICE_SPECIAL", special).replace("LOG_PROBS", log_probs)
            .replace("TARGET_START", target_start).replace("START", start).replace("RESULT", result))


CHOICE_LOGPROB_MUTANTS = {
    "summed over the prompt and the choice": _choice(start="0", target_start="1"),
    "the mean instead of the sum": _choice(result="picked.mean().item()"),
    "off by one position": _choice(start="start + 1", target_start="start + 2"),
    "a probability instead of a log-probability": _choice(result="picked.sum().exp().item()"),
    "the logits without log_softmax": _choice(log_probs="logits"),
    "the choice tokenized with special tokens": _choice(special="add_special_tokens=True"),
}

CHOICE_LOGPROB_ALTERNATIVES = {
    "the model's labels= loss times the number of choice tokens": '''
def choice_logprob(model, tokenizer, prompt, choice):
    p = tokenizer(prompt)["input_ids"]
    c = tokenizer(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])
    labels = torch.tensor([[-100] * len(p) + c])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels).loss
    return -loss.item() * len(c)
''',
    "a loop over the choice's tokens in float64": '''
def choice_logprob(model, tokenizer, prompt, choice):
    p = list(tokenizer(prompt)["input_ids"])
    c = list(tokenizer(choice, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + c])).logits[0].double()
    total = 0.0
    for i, token in enumerate(c):
        row = logits[len(p) - 1 + i]
        total += (row[token] - torch.logsumexp(row, dim=0)).item()
    return total
''',
}

# -- multiple_choice_accuracy ----------------------------------------------------------------------------

MULTIPLE_CHOICE_ACCURACY_MUTANTS = {
    "argmin": '''
def multiple_choice_accuracy(model, tokenizer, items):
    correct = 0
    for item in items:
        scores = [choice_logprob(model, tokenizer, item["prompt"], c) for c in item["choices"]]
        correct += int(torch.tensor(scores).argmin()) == item["answer"]
    return correct / len(items)
''',
    "compares the choice's text with the answer": '''
def multiple_choice_accuracy(model, tokenizer, items):
    correct = 0
    for item in items:
        scores = [choice_logprob(model, tokenizer, item["prompt"], c) for c in item["choices"]]
        correct += item["choices"][int(torch.tensor(scores).argmax())] == item["answer"]
    return correct / len(items)
''',
    "a count instead of a share": '''
def multiple_choice_accuracy(model, tokenizer, items):
    correct = 0
    for item in items:
        scores = [choice_logprob(model, tokenizer, item["prompt"], c) for c in item["choices"]]
        correct += int(torch.tensor(scores).argmax()) == item["answer"]
    return correct
''',
    "length-normalised scores": '''
def multiple_choice_accuracy(model, tokenizer, items):
    correct = 0
    for item in items:
        scores = [choice_logprob(model, tokenizer, item["prompt"], c)
                  / len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in item["choices"]]
        correct += int(torch.tensor(scores).argmax()) == item["answer"]
    return correct / len(items)
''',
}

MULTIPLE_CHOICE_ACCURACY_ALTERNATIVES = {
    "max with a key, and a mean of booleans": '''
def multiple_choice_accuracy(model, tokenizer, items):
    hits = []
    for item in items:
        choices = item["choices"]
        best = max(range(len(choices)), key=lambda i: choice_logprob(model, tokenizer, item["prompt"], choices[i]))
        hits.append(best == item["answer"])
    return sum(hits) / len(hits)
''',
    "sorted scores, best first": '''
def multiple_choice_accuracy(model, tokenizer, items):
    right = 0.0
    for item in items:
        ranked = sorted(((choice_logprob(model, tokenizer, item["prompt"], c), -i) for i, c in enumerate(item["choices"])),
                        reverse=True)
        right += float(-ranked[0][1] == item["answer"])
    return right / len(items)
''',
}

# -- distillation_loss -----------------------------------------------------------------------------------

_DISTILL = '''
def distillation_loss(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    vocab = student_logits.shape[-1]
    student = student_logits[SHIFT].reshape(-1, vocab)
    teacher = teacher_logits[SHIFT].DETACH.reshape(-1, vocab)
    targets = labels[LABEL_SHIFT].reshape(-1)
    keep = targets != -100
    log_q_all = F.log_softmax(student / temperature, dim=-1)
    log_p_all = F.log_softmax(teacher / TEACHER_T, dim=-1)
    log_q, log_p = log_q_all[keep], log_p_all[keep]
    kl = KL
    ce = F.cross_entropy(student[keep], targets[keep])
    return RESULT
'''


def _distill(shift=":, :-1", label_shift=":, 1:", detach="detach()", teacher_t="temperature",
             kl="(log_p.exp() * (log_p - log_q)).sum(dim=-1).mean()",
             result="alpha * temperature ** 2 * kl + (1 - alpha) * ce") -> str:
    return (_DISTILL.replace("LABEL_SHIFT", label_shift).replace("SHIFT", shift).replace("DETACH", detach)
            .replace("TEACHER_T", teacher_t).replace("KL", kl).replace("RESULT", result))


DISTILLATION_LOSS_MUTANTS = {
    "KL without the T² factor": _distill(result="alpha * kl + (1 - alpha) * ce"),
    "KL in the wrong direction": _distill(kl="(log_q.exp() * (log_q - log_p)).sum(dim=-1).mean()"),
    "the teacher's softmax at temperature 1": _distill(teacher_t="1.0"),
    "no shift": _distill(shift=":, :", label_shift=":, :"),
    "alpha on the wrong term": _distill(result="(1 - alpha) * temperature ** 2 * kl + alpha * ce"),
    "KL averaged over the vocabulary too": _distill(kl="F.kl_div(log_q, log_p, log_target=True, reduction='mean')"),
    "-100 positions kept in the KL": _distill(kl="(log_p_all.exp() * (log_p_all - log_q_all)).sum(dim=-1).mean()"),
    "the teacher not detached": _distill(detach="contiguous()"),
}

DISTILLATION_LOSS_ALTERNATIVES = {
    "F.kl_div(log_target=True, reduction='batchmean') on the kept positions": '''
def distillation_loss(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    s = student_logits[:, :-1].flatten(0, 1)
    t = teacher_logits.detach()[:, :-1].flatten(0, 1)
    y = labels[:, 1:].flatten()
    s, t, y = s[y != -100], t[y != -100], y[y != -100]
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                  reduction="batchmean")
    return alpha * temperature ** 2 * kl + (1 - alpha) * F.cross_entropy(s, y)
''',
    "in float64, cast back": '''
def distillation_loss(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    dtype = student_logits.dtype
    s, t = student_logits.double()[:, :-1], teacher_logits.detach().double()[:, :-1]
    y = labels[:, 1:]
    keep = (y != -100).double()
    log_q = (s / temperature).log_softmax(-1)
    p = (t / temperature).softmax(-1)
    kl = (p * (p.clamp_min(1e-300).log() - log_q)).sum(-1)
    ce = -s.log_softmax(-1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
    n = keep.sum()
    return (alpha * temperature ** 2 * (kl * keep).sum() / n + (1 - alpha) * (ce * keep).sum() / n).to(dtype)
''',
    "cross-entropy with soft targets minus the teacher's entropy": '''
def distillation_loss(student_logits, teacher_logits, labels, temperature=2.0, alpha=0.5):
    with torch.no_grad():
        p = F.softmax(teacher_logits[:, :-1] / temperature, dim=-1)
        entropy = -(p * F.log_softmax(teacher_logits[:, :-1] / temperature, dim=-1)).sum(-1)
    keep = labels[:, 1:] != -100
    soft_ce = F.cross_entropy((student_logits[:, :-1] / temperature)[keep], p[keep], reduction="none")
    kl = (soft_ce - entropy[keep]).mean()
    ce = F.cross_entropy(student_logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100)
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce
''',
}

# -- fit_scaling_law -------------------------------------------------------------------------------------

_FIT_TERMS = '''
def fit_scaling_law(rows):
    if len(rows) < 5:
        raise ValueError("five unknowns need at least five runs")
    n, d, y = (torch.tensor([float(r[k]) for r in rows], dtype=torch.float64).log() for k in ("params", "tokens", "loss"))
    p = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([p], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((torch.logsumexp(torch.stack(TERMS), dim=0) - y) ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    q = p.detach().tolist()
    return LAW
'''

FIT_SCALING_LAW_MUTANTS = {
    "only the N term (D ignored)": _FIT_TERMS.replace("START", "[0.0, 5.0, 0.3]").replace(
        "TERMS", "[p[0].expand_as(n), p[1] - p[2] * n]").replace(
        "LAW", '{"E": math.exp(q[0]), "A": math.exp(q[1]), "alpha": q[2], "B": 0.0, "beta": 1.0}'),
    "no irreducible term (E fixed at 0)": _FIT_TERMS.replace("START", "[5.0, 0.3, 5.0, 0.3]").replace(
        "TERMS", "[p[0] - p[1] * n, p[2] - p[3] * d]").replace(
        "LAW", '{"E": 0.0, "A": math.exp(q[0]), "alpha": q[1], "B": math.exp(q[2]), "beta": q[3]}'),
    "one power law: least squares of log L on log N": '''
def fit_scaling_law(rows):
    if len(rows) < 5:
        raise ValueError("five unknowns need at least five runs")
    x = torch.tensor([math.log(r["params"]) for r in rows], dtype=torch.float64)
    y = torch.tensor([math.log(r["loss"]) for r in rows], dtype=torch.float64)
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return {"E": 0.0, "A": math.exp(y.mean() - slope * x.mean()), "alpha": -slope.item(), "B": 0.0, "beta": 1.0}
''',
    "N and D swapped": '''
_fit_right = fit_scaling_law

def fit_scaling_law(rows):
    return _fit_right([{"params": r["tokens"], "tokens": r["params"], "loss": r["loss"]} for r in rows])
''',
    "A and B swapped in the result": '''
_fit_right = fit_scaling_law

def fit_scaling_law(rows):
    law = _fit_right(rows)
    return {"E": law["E"], "A": law["B"], "alpha": law["alpha"], "B": law["A"], "beta": law["beta"]}
''',
}

FIT_SCALING_LAW_ALTERNATIVES = {
    "Adam on a log-space Huber loss, centred logs, two starts": '''
def fit_scaling_law(rows):
    if len(rows) < 5:
        raise ValueError("five unknowns need at least five runs")
    n, d, y = (torch.tensor([float(r[k]) for r in rows], dtype=torch.float64).log() for k in ("params", "tokens", "loss"))
    n0, d0 = n.mean(), d.mean()  # centred: A / N^alpha = exp(a - alpha (log N - n0)), better conditioned
    best = None
    for start in ([0.0, -1.0, 0.3, -1.0, 0.3], [0.5, -2.0, 0.6, -2.0, 0.6]):
        p = torch.tensor(start, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([p], lr=0.05)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 1000)
        for _ in range(1000):
            opt.zero_grad()
            pred = torch.logsumexp(torch.stack([p[0].expand_as(n), p[1] - p[2] * (n - n0), p[3] - p[4] * (d - d0)]), 0)
            loss = F.huber_loss(pred, y, delta=1e-3)
            loss.backward()
            opt.step()
            schedule.step()
        if best is None or loss.item() < best[0]:
            best = (loss.item(), p.detach().tolist())
    e, a, alpha, b, beta = best[1]
    return {"E": math.exp(e), "A": math.exp(a + alpha * n0.item()), "alpha": alpha,
            "B": math.exp(b + beta * d0.item()), "beta": beta}
''',
    "LBFGS on relative errors in linear space, on E, log A, alpha, log B, beta": '''
def fit_scaling_law(rows):
    if len(rows) < 5:
        raise ValueError("five unknowns need at least five runs")
    n, d, y = (torch.tensor([float(r[k]) for r in rows], dtype=torch.float64) for k in ("params", "tokens", "loss"))
    best = None
    for exponent in (0.2, 0.5):
        p = torch.tensor([1.0, 5.0, exponent, 5.0, exponent], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([p], max_iter=1000, line_search_fn="strong_wolfe", tolerance_grad=1e-14,
                                tolerance_change=1e-16)

        def closure():
            opt.zero_grad()
            pred = p[0] + torch.exp(p[1] - p[2] * n.log()) + torch.exp(p[3] - p[4] * d.log())
            loss = ((pred / y - 1) ** 2).mean()
            loss.backward()
            return loss

        opt.step(closure)
        value = closure().item()
        if math.isfinite(value) and (best is None or value < best[0]):
            best = (value, p.detach().tolist())
    e, a, alpha, b, beta = best[1]
    return {"E": e, "A": math.exp(a), "alpha": alpha, "B": math.exp(b), "beta": beta}
''',
}

# -- compute_optimal -------------------------------------------------------------------------------------

_OPTIMAL = '''
def compute_optimal(C, law):
    a, b = law["alpha"], law["beta"]
    g = G
    params = g * (BUDGET) ** (EXPONENT)
    tokens = (BUDGET) / params
    return RESULT
'''


def _optimal(g='(a * law["A"] / (b * law["B"])) ** (1 / (a + b))', budget="C / 6", exponent="b / (a + b)",
             result="params, tokens") -> str:
    return (_OPTIMAL.replace("G", g, 1).replace("BUDGET", budget).replace("EXPONENT", exponent)
            .replace("RESULT", result))


COMPUTE_OPTIMAL_MUTANTS = {
    "forgetting the 6": _optimal(budget="C"),
    "exponents swapped": _optimal(exponent="a / (a + b)"),
    "G inverted": _optimal(g='(b * law["B"] / (a * law["A"])) ** (1 / (a + b))'),
    "returns (tokens, params)": _optimal(result="tokens, params"),
    "no G factor": _optimal(g="1.0"),
}

COMPUTE_OPTIMAL_ALTERNATIVES = {
    "golden-section search on log N": '''
def compute_optimal(C, law):
    def loss(log_n):
        n = math.exp(log_n)
        return law["A"] / n ** law["alpha"] + law["B"] / (C / (6 * n)) ** law["beta"]

    lo, hi = 0.0, math.log(C / 6)
    ratio = (math.sqrt(5) - 1) / 2
    while hi - lo > 1e-11:
        x1, x2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if loss(x1) < loss(x2):
            hi = x2
        else:
            lo = x1
    params = math.exp((lo + hi) / 2)
    return params, C / (6 * params)
''',
    "the closed form with D first": '''
def compute_optimal(C, law):
    a, A, b, B = law["alpha"], law["A"], law["beta"], law["B"]
    tokens = (b * B / (a * A)) ** (1 / (a + b)) * (C / 6) ** (a / (a + b))
    return C / (6 * tokens), tokens
''',
}

MUTANTS: dict[str, dict[str, str]] = {
    "perplexity": PERPLEXITY_MUTANTS,
    "bleu": BLEU_MUTANTS,
    "choice_logprob": CHOICE_LOGPROB_MUTANTS,
    "multiple_choice_accuracy": MULTIPLE_CHOICE_ACCURACY_MUTANTS,
    "distillation_loss": DISTILLATION_LOSS_MUTANTS,
    "fit_scaling_law": FIT_SCALING_LAW_MUTANTS,
    "compute_optimal": COMPUTE_OPTIMAL_MUTANTS,
}
ALTERNATIVES: dict[str, dict[str, str]] = {
    "perplexity": PERPLEXITY_ALTERNATIVES,
    "bleu": BLEU_ALTERNATIVES,
    "choice_logprob": CHOICE_LOGPROB_ALTERNATIVES,
    "multiple_choice_accuracy": MULTIPLE_CHOICE_ACCURACY_ALTERNATIVES,
    "distillation_loss": DISTILLATION_LOSS_ALTERNATIVES,
    "fit_scaling_law": FIT_SCALING_LAW_ALTERNATIVES,
    "compute_optimal": COMPUTE_OPTIMAL_ALTERNATIVES,
}
SPECIFIC_HINTS: list[tuple[str, str, str]] = [  # (exercise, mutant, words the hint of some failing check contains)
    ("perplexity", "mean of per-text perplexities", "mean of the texts' perplexities"),
    ("perplexity", "mean of per-text losses", "averages the texts' mean losses"),
    ("perplexity", "logits not shifted", "not shifted"),
    ("perplexity", "no exp (returns the loss)", "math.exp(mean NLL)"),
    ("perplexity", "log base 2", "not a power of 2"),
    ("perplexity", "max_length ignored", "truncation=True"),
    ("perplexity", "the first token counted too", "n - 1 predicted tokens"),
    ("perplexity", "padding counted in a batched version", "attention_mask is 0"),
    ("bleu", "no clipping", "clip each n-gram's count"),
    ("bleu", "clipping summed over the references", "not by the sum over the references"),
    ("bleu", "brevity penalty from the longest reference", "not the longest one"),
    ("bleu", "brevity penalty from the shortest reference", "not the shortest one"),
    ("bleu", "arithmetic mean of the precisions", "not their average"),
    ("bleu", "the average of sentence BLEUs", "instead of averaging sentence BLEUs"),
    ("bleu", "lower-cased words", "Do not lower-case"),
    ("choice_logprob", "summed over the prompt and the choice", "prompt's tokens too"),
    ("choice_logprob", "the mean instead of the sum", "mean over the choice's tokens"),
    ("choice_logprob", "a probability instead of a log-probability", "That is a probability"),
    ("choice_logprob", "the logits without log_softmax", "raw logits"),
    ("choice_logprob", "off by one position", "Off by one"),
    ("choice_logprob", "the choice tokenized with special tokens", "add_special_tokens=False"),
    ("multiple_choice_accuracy", "argmin", "LEAST likely"),
    ("multiple_choice_accuracy", "a count instead of a share", "divide by the number of items"),
    ("multiple_choice_accuracy", "compares the choice's text with the answer", "not with the choice's text"),
    ("multiple_choice_accuracy", "length-normalised scores", "by its number of tokens"),
    ("distillation_loss", "KL without the T² factor", "KL without the T² factor?"),
    ("distillation_loss", "KL in the wrong direction", "KL in the wrong direction?"),
    ("distillation_loss", "the teacher's softmax at temperature 1", "temperature 1?"),
    ("distillation_loss", "no shift", "No shift?"),
    ("distillation_loss", "alpha on the wrong term", "alpha on the wrong term?"),
    ("distillation_loss", "KL averaged over the vocabulary too", "averaged over the vocabulary too?"),
    ("distillation_loss", "-100 positions kept in the KL", "-100 positions kept in the KL?"),
    ("distillation_loss", "the teacher not detached", "detach()"),
    ("fit_scaling_law", "N and D swapped", "N and D are swapped"),
    ("fit_scaling_law", "A and B swapped in the result", "A and B are swapped"),
    ("fit_scaling_law", "no irreducible term (E fixed at 0)", "E is 0"),
    ("fit_scaling_law", "only the N term (D ignored)", "One of the two terms is missing"),
    ("fit_scaling_law", "one power law: least squares of log L on log N", "One of the two terms is missing"),
    ("compute_optimal", "forgetting the 6", "Forgot the 6?"),
    ("compute_optimal", "returns (tokens, params)", "That looks like (tokens, params)"),
    ("compute_optimal", "G inverted", "G is inverted"),
]
