"""06_applications: the cases its checks are tried against (see tests/specs/__init__.py for the form).

No case may hang: the checks send an evaluator harmless inputs that a careless one gets wrong before any input
that would keep it busy (the eval and exec mutants of safe_eval and run_program rely on that).
"""
from __future__ import annotations

import ast
import math
import operator
import re
from collections import Counter

import torch
import torch.nn.functional as F

from grader.reference.applications import MAX_ABS, MAX_EXPONENT, MAX_LENGTH, parse_action, safe_eval
from grader.reference.applications import run_program as _solution_run_program
from grader.reference.applications import safe_eval as _solution_safe_eval
from llmcourse.applications_formats import RAG_INSTRUCTION, react_prompt
from llmcourse.assets import format_instruction
from tests.specs import Spec

SPEC = Spec(
    "06_applications",
    depends_on={
        "chunk_text": set(),
        "bm25_scores": set(),
        "embed": set(),
        "top_k": set(),
        "build_rag_prompt": set(),
        "parse_action": set(),
        "react": {"parse_action"},
        "safe_eval": set(),
        "run_program": {"safe_eval"},
    },
    student_modules=("llmcourse.applications_tools", "llmcourse.applications_formats"),
)


# -- chunk_text -------------------------------------------------------------------------------------------
# Each case starts with the argument check that the notebook's cell gives the student.

@SPEC.mutant("chunk_text", hint="last window is missing")
def drops_the_last_window(text, tokenizer, max_tokens, overlap):
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap < max_tokens")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    step = max_tokens - overlap
    return [tokenizer.decode(ids[s:s + max_tokens]) for s in range(0, len(ids) - max_tokens + 1, step)]


@SPEC.mutant("chunk_text")
def ignores_the_overlap(text, tokenizer, max_tokens, overlap):
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap < max_tokens")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(ids[s:s + max_tokens]) for s in range(0, len(ids), max_tokens)]


@SPEC.mutant("chunk_text", hint="extra windows")
def a_window_too_many_at_the_end(text, tokenizer, max_tokens, overlap):
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap < max_tokens")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    step = max_tokens - overlap
    return [tokenizer.decode(ids[s:s + max_tokens]) for s in range(0, len(ids), step)]


@SPEC.mutant("chunk_text", hint="add_special_tokens=False")
def special_tokens_kept(text, tokenizer, max_tokens, overlap):
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap < max_tokens")
    ids = tokenizer(text)["input_ids"]
    chunks = []
    for start in range(0, len(ids), max_tokens - overlap):
        chunks.append(tokenizer.decode(ids[start:start + max_tokens]))
        if start + max_tokens >= len(ids):
            break
    return chunks


@SPEC.mutant("chunk_text", hint="characters")
def windows_of_characters(text, tokenizer, max_tokens, overlap):
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap < max_tokens")
    chunks = []
    for start in range(0, len(text), max_tokens - overlap):
        chunks.append(text[start:start + max_tokens])
        if start + max_tokens >= len(text):
            break
    return chunks


@SPEC.alternative("chunk_text")
def a_while_loop(text, tokenizer, max_tokens, overlap):
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap < max_tokens")
    ids = tokenizer.encode(text, add_special_tokens=False)
    chunks, start = [], 0
    while start < len(ids):
        end = min(start + max_tokens, len(ids))
        chunks.append(tokenizer.decode(ids[start:end]))
        if end == len(ids):
            break
        start = end - overlap
    return chunks


@SPEC.alternative("chunk_text", name="the number of windows first, then batch_decode")
def the_number_of_windows_first_then_batch_decode(text, tokenizer, max_tokens, overlap):
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap < max_tokens")
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if not ids:
        return []
    step = max_tokens - overlap
    count = 1 if len(ids) <= max_tokens else 1 + math.ceil((len(ids) - max_tokens) / step)
    return tokenizer.batch_decode([ids[i * step:i * step + max_tokens] for i in range(count)])


@SPEC.alternative("chunk_text")
def a_tensor_of_ids(text, tokenizer, max_tokens, overlap):
    if max_tokens < 1 or not 0 <= overlap < max_tokens:
        raise ValueError("need max_tokens >= 1 and 0 <= overlap < max_tokens")
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
    starts = list(range(0, max(len(ids) - overlap, 0), max_tokens - overlap))
    starts = [s for i, s in enumerate(starts) if i == 0 or starts[i - 1] + max_tokens < len(ids)]
    return [tokenizer.decode(ids[s:s + max_tokens]) for s in starts]


# -- bm25_scores ------------------------------------------------------------------------------------------

@SPEC.mutant("bm25_scores", name="classic IDF (can go negative)", hint="never goes negative")
def classic_idf_can_go_negative(query_tokens, docs_tokens, k1=1.5, b=0.75):
    lengths = torch.tensor([len(d) for d in docs_tokens], dtype=torch.float64)
    norm = k1 * (1 - b + b * lengths / lengths.mean())
    counts = [Counter(d) for d in docs_tokens]
    scores = torch.zeros(len(docs_tokens), dtype=torch.float64)
    for term in query_tokens:
        tf = torch.tensor([c[term] for c in counts], dtype=torch.float64)
        n = int((tf > 0).sum())
        scores += math.log((len(docs_tokens) - n + 0.5) / (n + 0.5)) * tf / (tf + norm)
    return scores


@SPEC.mutant("bm25_scores", hint="length")
def no_length_normalisation(query_tokens, docs_tokens, k1=1.5, b=0.75):
    counts = [Counter(d) for d in docs_tokens]
    scores = torch.zeros(len(docs_tokens), dtype=torch.float64)
    for term in query_tokens:
        tf = torch.tensor([c[term] for c in counts], dtype=torch.float64)
        n = int((tf > 0).sum())
        scores += math.log(1 + (len(docs_tokens) - n + 0.5) / (n + 0.5)) * tf / (tf + k1)
    return scores


@SPEC.mutant("bm25_scores", hint="upside down")
def length_ratio_upside_down(query_tokens, docs_tokens, k1=1.5, b=0.75):
    lengths = torch.tensor([len(d) for d in docs_tokens], dtype=torch.float64)
    norm = k1 * (1 - b + b * lengths.mean() / lengths.clamp(min=1))
    counts = [Counter(d) for d in docs_tokens]
    scores = torch.zeros(len(docs_tokens), dtype=torch.float64)
    for term in query_tokens:
        tf = torch.tensor([c[term] for c in counts], dtype=torch.float64)
        n = int((tf > 0).sum())
        scores += math.log(1 + (len(docs_tokens) - n + 0.5) / (n + 0.5)) * tf / (tf + norm)
    return scores


@SPEC.mutant("bm25_scores", name="(k1 + 1) in the numerator", hint="(k1 + 1)")
def k1_1_in_the_numerator(query_tokens, docs_tokens, k1=1.5, b=0.75):
    lengths = torch.tensor([len(d) for d in docs_tokens], dtype=torch.float64)
    norm = k1 * (1 - b + b * lengths / lengths.mean())
    counts = [Counter(d) for d in docs_tokens]
    scores = torch.zeros(len(docs_tokens), dtype=torch.float64)
    for term in query_tokens:
        tf = torch.tensor([c[term] for c in counts], dtype=torch.float64)
        n = int((tf > 0).sum())
        scores += math.log(1 + (len(docs_tokens) - n + 0.5) / (n + 0.5)) * tf * (k1 + 1) / (tf + norm)
    return scores


@SPEC.mutant("bm25_scores", hint="repeated")
def repeated_query_words_counted_once(query_tokens, docs_tokens, k1=1.5, b=0.75):
    lengths = torch.tensor([len(d) for d in docs_tokens], dtype=torch.float64)
    norm = k1 * (1 - b + b * lengths / lengths.mean())
    counts = [Counter(d) for d in docs_tokens]
    scores = torch.zeros(len(docs_tokens), dtype=torch.float64)
    for term in set(query_tokens):
        tf = torch.tensor([c[term] for c in counts], dtype=torch.float64)
        n = int((tf > 0).sum())
        scores += math.log(1 + (len(docs_tokens) - n + 0.5) / (n + 0.5)) * tf / (tf + norm)
    return scores


@SPEC.alternative("bm25_scores", name="plain Python floats (a float32 tensor)")
def plain_python_floats_a_float32_tensor(query_tokens, docs_tokens, k1=1.5, b=0.75):
    N = len(docs_tokens)
    avgdl = sum(len(d) for d in docs_tokens) / N
    df = Counter(t for d in docs_tokens for t in set(d))
    scores = []
    for d in docs_tokens:
        tf = Counter(d)
        s = 0.0
        for t in query_tokens:
            idf = math.log(1 + (N - df[t] + 0.5) / (df[t] + 0.5))
            s += idf * tf[t] / (tf[t] + k1 * (1 - b + b * len(d) / avgdl))
        scores.append(s)
    return torch.tensor(scores)


@SPEC.alternative("bm25_scores", name="a term-document matrix")
def a_term_document_matrix(query_tokens, docs_tokens, k1=1.5, b=0.75):
    vocab = {t: i for i, t in enumerate(dict.fromkeys(t for d in docs_tokens for t in d))}
    tf = torch.zeros(len(docs_tokens), len(vocab) + 1, dtype=torch.float64)  # the last column: unknown words
    for i, d in enumerate(docs_tokens):
        for t in d:
            tf[i, vocab[t]] += 1
    n = (tf > 0).sum(0)
    idf = torch.log(1 + (len(docs_tokens) - n + 0.5) / (n + 0.5))
    lengths = tf.sum(1, keepdim=True)
    per_term = idf * tf / (tf + k1 * (1 - b + b * lengths / lengths.mean()))
    columns = torch.tensor([vocab.get(t, len(vocab)) for t in query_tokens], dtype=torch.long)
    return per_term[:, columns].sum(1)


# -- embed ------------------------------------------------------------------------------------------------

@SPEC.mutant("embed", hint="padd")
@torch.no_grad()
def padding_averaged_too(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    return F.normalize(model(**enc, output_hidden_states=True).hidden_states[-1].mean(dim=1), dim=-1)


@SPEC.mutant("embed", hint="first token")
@torch.no_grad()
def first_token_only(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    return F.normalize(model(**enc, output_hidden_states=True).hidden_states[-1][:, 0], dim=-1)


@SPEC.mutant("embed", hint="normalise")
@torch.no_grad()
def not_normalised(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1)


@SPEC.mutant("embed", hint="dim=-1")
@torch.no_grad()
def normalised_over_the_texts(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=0)


@SPEC.mutant("embed", name="the embedding layer's output", hint="hidden_states[-1]")
@torch.no_grad()
def the_embedding_layers_output(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    hidden = model(**enc, output_hidden_states=True).hidden_states[0]
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


@SPEC.alternative("embed", name="einsum, then normalise the sum")
@torch.no_grad()
def einsum_then_normalise_the_sum(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                   output_hidden_states=True).hidden_states[-1]
    summed = torch.einsum("nld,nl->nd", hidden, enc["attention_mask"].float())
    return summed / summed.norm(dim=-1, keepdim=True)


@SPEC.alternative("embed")
def one_text_at_a_time(texts, model, tokenizer):
    rows = []
    for text in texts:
        with torch.no_grad():
            out = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True)
        rows.append(out.hidden_states[-1][0].mean(dim=0))
    return F.normalize(torch.stack(rows), dim=-1)


@SPEC.alternative("embed", name="the base model's last_hidden_state")
@torch.no_grad()
def the_base_models_last_hidden_state(texts, model, tokenizer):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    hidden = model.base_model(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].to(hidden.dtype)
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), p=2, dim=1)


# -- top_k ------------------------------------------------------------------------------------------------

@SPEC.mutant("top_k", name="dot product, not normalised", hint="Normalise both")
def dot_product_not_normalised(query_vecs, doc_vecs, k):
    scores, indices = torch.topk(query_vecs @ doc_vecs.T, min(k, doc_vecs.shape[0]), dim=-1)
    return scores, indices


@SPEC.mutant("top_k", hint="Normalise the queries")
def only_the_documents_normalised(query_vecs, doc_vecs, k):
    scores, indices = torch.topk(query_vecs @ F.normalize(doc_vecs, dim=-1).T, min(k, doc_vecs.shape[0]), dim=-1)
    return scores, indices


@SPEC.mutant("top_k", hint="best first")
def worst_first(query_vecs, doc_vecs, k):
    sims = F.normalize(query_vecs, dim=-1) @ F.normalize(doc_vecs, dim=-1).T
    scores, indices = torch.topk(sims, min(k, doc_vecs.shape[0]), dim=-1, largest=False)
    return scores, indices


@SPEC.mutant("top_k", hint="min(k, n_docs)")
def k_not_clamped(query_vecs, doc_vecs, k):
    sims = F.normalize(query_vecs, dim=-1) @ F.normalize(doc_vecs, dim=-1).T
    scores, indices = torch.topk(sims, k, dim=-1)
    return scores, indices


@SPEC.alternative("top_k")
def einsum_and_argsort(query_vecs, doc_vecs, k):
    q = query_vecs / query_vecs.norm(dim=-1, keepdim=True)
    d = doc_vecs / doc_vecs.norm(dim=-1, keepdim=True)
    sims = torch.einsum("qd,nd->qn", q, d)
    order = sims.argsort(dim=-1, descending=True)[:, :k]
    return sims.gather(-1, order), order


@SPEC.alternative("top_k")
def float64_and_sort(query_vecs, doc_vecs, k):
    sims = F.normalize(query_vecs.double(), dim=-1) @ F.normalize(doc_vecs.double(), dim=-1).T
    scores, indices = sims.sort(dim=-1, descending=True)
    k = min(k, doc_vecs.shape[0])
    return scores[:, :k].float(), indices[:, :k]


@SPEC.alternative("top_k")
def a_plain_tuple_from_topk(query_vecs, doc_vecs, k):
    sims = F.cosine_similarity(query_vecs[:, None, :], doc_vecs[None, :, :], dim=-1)
    scores, indices = sims.topk(min(k, len(doc_vecs)))
    return scores, indices


# -- build_rag_prompt -------------------------------------------------------------------------------------

@SPEC.mutant("build_rag_prompt", hint="newline")
def passages_kept_as_they_are(question, passages):
    numbered = "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1))
    return format_instruction(RAG_INSTRUCTION, f"{numbered}\nQuestion: {question}")


@SPEC.mutant("build_rag_prompt", hint="from 1")
def numbered_from_0(question, passages):
    numbered = "\n".join(f"[{i}] {' '.join(p.split())}" for i, p in enumerate(passages))
    return format_instruction(RAG_INSTRUCTION, f"{numbered}\nQuestion: {' '.join(question.split())}")


@SPEC.mutant("build_rag_prompt", name="### removed instead of the newlines")
def removed_instead_of_the_newlines(question, passages):
    numbered = "\n".join(f"[{i}] {p.replace('###', '')}" for i, p in enumerate(passages, 1))
    return format_instruction(RAG_INSTRUCTION, f"{numbered}\nQuestion: {question.replace('###', '')}")


@SPEC.mutant("build_rag_prompt")
def the_question_left_as_it_is(question, passages):
    numbered = "\n".join(f"[{i}] {' '.join(p.split())}" for i, p in enumerate(passages, 1))
    return format_instruction(RAG_INSTRUCTION, f"{numbered}\nQuestion: {question}")


@SPEC.alternative("build_rag_prompt", name="a regular expression, then rag_text")
def a_regular_expression_then_rag_text(question, passages):
    from llmcourse.applications_formats import rag_text

    def clean(text):
        return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()
    return rag_text(clean(question), [clean(p) for p in passages])


@SPEC.alternative("build_rag_prompt")
def the_template_written_out(question, passages):
    lines = [f"[{i + 1}] " + p.replace("\r", " ").replace("\n", " ").strip() for i, p in enumerate(passages)]
    lines.append("Question: " + question.replace("\r", " ").replace("\n", " ").strip())
    return "### Instruction:\n" + RAG_INSTRUCTION + "\n\n### Input:\n" + "\n".join(lines) + "\n\n### Response:\n"


# -- parse_action -----------------------------------------------------------------------------------------

@SPEC.mutant("parse_action", hint="Observation:")
def acts_on_lines_after_an_observation(text):
    for line in text.split("\n"):
        m = re.match(r"^(?:Action:\s*)?(\w+)\[(.*)\]\s*$", line.strip())
        if m and (line.strip().startswith("Action:") or m.group(1) == "Finish"):
            tool, argument = m.group(1), m.group(2).strip()
            return ("finish", argument) if tool.lower() == "finish" else (tool, argument)
    return None


@SPEC.mutant("parse_action", name="Finish kept capitalised", hint="whatever its capitalisation")
def finish_kept_capitalised(text):
    for line in text.split("\n"):
        if line.startswith("Observation:"):
            return None
        m = re.match(r"^(?:Action:\s*)?(\w+)\[(.*)\]\s*$", line.strip())
        if m and (line.strip().startswith("Action:") or m.group(1) == "Finish"):
            return m.group(1), m.group(2).strip()
    return None


@SPEC.mutant("parse_action", name="the last action, not the first")
def the_last_action_not_the_first(text):
    found = None
    for line in text.split("\n"):
        if line.startswith("Observation:"):
            break
        m = re.match(r"^(?:Action:\s*)?(\w+)\[(.*)\]\s*$", line.strip())
        if m and (line.strip().startswith("Action:") or m.group(1) == "Finish"):
            tool, argument = m.group(1), m.group(2).strip()
            found = ("finish", argument) if tool.lower() == "finish" else (tool, argument)
    return found


@SPEC.mutant("parse_action")
def an_action_anywhere_in_the_text(text):
    m = re.search(r"(?:Action:\s*(\w+)|(Finish))\[(.*?)\]", text)
    if m is None:
        return None
    tool = m.group(1) or m.group(2)
    return ("finish", m.group(3).strip()) if tool.lower() == "finish" else (tool, m.group(3).strip())


@SPEC.mutant("parse_action", name="bare Finish lines ignored")
def bare_finish_lines_ignored(text):
    for line in text.split("\n"):
        if line.startswith("Observation:"):
            return None
        m = re.match(r"^Action:\s*(\w+)\[(.*)\]\s*$", line.strip())
        if m:
            tool, argument = m.group(1), m.group(2).strip()
            return ("finish", argument) if tool.lower() == "finish" else (tool, argument)
    return None


@SPEC.alternative("parse_action", name="string methods, no regular expression")
def string_methods_no_regular_expression(text):
    for line in text.split("\n"):
        if line.startswith("Observation:"):
            return None
        line = line.strip()
        if line.startswith("Action:"):
            body = line[len("Action:"):].strip()
        elif line.startswith("Finish["):
            body = line
        else:
            continue
        tool, bracket, argument = body.partition("[")
        if not bracket or not body.endswith("]") or not tool.isidentifier():
            continue
        argument = argument[:-1].strip()
        return ("finish", argument) if tool.lower() == "finish" else (tool, argument)
    return None


@SPEC.alternative("parse_action")
def one_multiline_regular_expression(text):
    line = re.compile(r"^(?:(Observation:).*|Action:[ \t]*(\w+)\[(.*)\]|(Finish)\[(.*)\])[ \t]*$", re.MULTILINE)
    for m in line.finditer(text):
        if m.group(1):
            return None
        tool, argument = (m.group(2), m.group(3)) if m.group(2) else (m.group(4), m.group(5))
        return ("finish", argument.strip()) if tool.lower() == "finish" else (tool, argument.strip())
    return None


# -- react ------------------------------------------------------------------------------------------------

@SPEC.mutant("react", hint="Error: ...")
def a_tool_error_stops_the_loop(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    for _ in range(max_steps):
        text = model_fn(prompt).split("\nObservation:")[0]
        action = parse_action(text)
        if action is None or action[0] == "finish":
            trace.append({"text": text, "tool": action and action[0], "argument": action and action[1],
                          "observation": None})
            return (action[1] if action else None), trace
        observation = str(tools[action[0]](action[1]))
        trace.append({"text": text, "tool": action[0], "argument": action[1], "observation": observation})
        prompt += text + f"\nObservation: {observation}\n"
    return None, trace


@SPEC.mutant("react", hint="max_steps")
def no_step_limit(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    while True:
        text = model_fn(prompt).split("\nObservation:")[0]
        action = parse_action(text)
        if action is None or action[0] == "finish":
            trace.append({"text": text, "tool": action and action[0], "argument": action and action[1],
                          "observation": None})
            return (action[1] if action else None), trace
        try:
            observation = str(tools[action[0]](action[1]))
        except Exception as e:
            observation = f"Error: {e}"
        trace.append({"text": text, "tool": action[0], "argument": action[1], "observation": observation})
        prompt += text + f"\nObservation: {observation}\n"


@SPEC.mutant("react", hint="max_steps")
def one_call_too_many(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    for _ in range(max_steps + 1):
        text = model_fn(prompt).split("\nObservation:")[0]
        action = parse_action(text)
        if action is None or action[0] == "finish":
            trace.append({"text": text, "tool": action and action[0], "argument": action and action[1],
                          "observation": None})
            return (action[1] if action else None), trace
        try:
            observation = str(tools[action[0]](action[1]))
        except Exception as e:
            observation = f"Error: {e}"
        trace.append({"text": text, "tool": action[0], "argument": action[1], "observation": observation})
        prompt += text + f"\nObservation: {observation}\n"
    return None, trace


@SPEC.mutant("react", hint="cut it off")
def the_invented_observation_kept(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    for _ in range(max_steps):
        text = model_fn(prompt)
        action = parse_action(text)
        if action is None or action[0] == "finish":
            trace.append({"text": text, "tool": action and action[0], "argument": action and action[1],
                          "observation": None})
            return (action[1] if action else None), trace
        try:
            observation = str(tools[action[0]](action[1]))
        except Exception as e:
            observation = f"Error: {e}"
        trace.append({"text": text, "tool": action[0], "argument": action[1], "observation": observation})
        prompt += text + f"\nObservation: {observation}\n"
    return None, trace


@SPEC.mutant("react")
def the_prompt_never_grows(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    for _ in range(max_steps):
        text = model_fn(prompt).split("\nObservation:")[0]
        action = parse_action(text)
        if action is None or action[0] == "finish":
            trace.append({"text": text, "tool": action and action[0], "argument": action and action[1],
                          "observation": None})
            return (action[1] if action else None), trace
        try:
            observation = str(tools[action[0]](action[1]))
        except Exception as e:
            observation = f"Error: {e}"
        trace.append({"text": text, "tool": action[0], "argument": action[1], "observation": observation})
    return None, trace


@SPEC.mutant("react")
def an_unknown_tool_raises(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    for _ in range(max_steps):
        text = model_fn(prompt).split("\nObservation:")[0]
        action = parse_action(text)
        if action is None or action[0] == "finish":
            trace.append({"text": text, "tool": action and action[0], "argument": action and action[1],
                          "observation": None})
            return (action[1] if action else None), trace
        tool = tools[action[0]]
        try:
            observation = str(tool(action[1]))
        except Exception as e:
            observation = f"Error: {e}"
        trace.append({"text": text, "tool": action[0], "argument": action[1], "observation": observation})
        prompt += text + f"\nObservation: {observation}\n"
    return None, trace


@SPEC.alternative("react")
def a_while_loop_and_a_list_of_prompt_parts(model_fn, question, tools, max_steps=6):
    parts, trace, steps = [react_prompt(question)], [], 0
    while steps < max_steps:
        steps += 1
        text = model_fn("".join(parts))
        cut = text.find("\nObservation:")
        if cut != -1:
            text = text[:cut]
        action = parse_action(text)
        step = {"text": text, "tool": None, "argument": None, "observation": None}
        trace.append(step)
        if action is None:
            return None, trace
        step["tool"], step["argument"] = action
        if action[0] == "finish":
            return action[1], trace
        tool = tools.get(action[0])
        try:
            if tool is None:
                raise KeyError(f"there is no tool called {action[0]}")
            observation = f"{tool(action[1])}"
        except Exception as error:
            observation = f"Error: {error}"
        step["observation"] = observation
        parts.append(f"{text}\nObservation: {observation}\n")
    return None, trace


@SPEC.alternative("react")
def partition_and_early_returns(model_fn, question, tools, max_steps=6):
    prompt, trace = react_prompt(question), []
    for _ in range(max_steps):
        text, _, _ = model_fn(prompt).partition("\nObservation:")
        action = parse_action(text)
        tool, argument = action if action else (None, None)
        if tool is None or tool == "finish":
            trace.append(dict(text=text, tool=tool, argument=argument, observation=None))
            return argument, trace
        if tool in tools:
            try:
                observation = str(tools[tool](argument))
            except Exception as error:
                observation = f"Error: {type(error).__name__}: {error}"
        else:
            observation = f"Error: no tool named {tool}"
        trace.append(dict(text=text, tool=tool, argument=argument, observation=observation))
        prompt = f"{prompt}{text}\nObservation: {observation}\n"
    return None, trace


# -- safe_eval --------------------------------------------------------------------------------------------

@SPEC.mutant("safe_eval")
def eval_without_builtins(expression):
    try:
        return eval(expression, {"__builtins__": {}})
    except (SyntaxError, ZeroDivisionError) as e:
        raise ValueError(str(e)) from None


@SPEC.mutant("safe_eval", name="math's constants allowed", original="_solution_safe_eval")
def maths_constants_allowed(expression):
    for name in ("pi", "e", "tau"):
        expression = re.sub(rf"\b{name}\b", repr(getattr(math, name)), expression)
    return _solution_safe_eval(expression)


@SPEC.mutant("safe_eval", hint="bool", original="_solution_safe_eval")
def bools_accepted_as_numbers(expression):
    if isinstance(expression, str):
        expression = re.sub(r"\bTrue\b", "1", re.sub(r"\bFalse\b", "0", expression))
    return _solution_safe_eval(expression)


@SPEC.mutant("safe_eval", name="result bound only (the power is computed first)", hint="exponent")
def result_bound_only_the_power_is_computed_first(expression):
    if len(expression) > MAX_LENGTH:
        raise ValueError("too long")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(e.msg) from None
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}

    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            result = node.value
        elif isinstance(node, ast.BinOp) and type(node.op) in ops:
            try:
                result = ops[type(node.op)](value(node.left), value(node.right))
            except (ZeroDivisionError, OverflowError) as e:
                raise ValueError(str(e)) from None
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            result = value(node.operand) * (-1 if isinstance(node.op, ast.USub) else 1)
        else:
            raise ValueError("not arithmetic")
        if isinstance(result, complex) or not abs(result) <= MAX_ABS:
            raise ValueError("too large")
        return result

    return value(tree.body)


@SPEC.mutant("safe_eval")
def no_bounds_at_all(expression):
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(e.msg) from None
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}

    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            try:
                return ops[type(node.op)](value(node.left), value(node.right))
            except ZeroDivisionError:
                raise ValueError("division by zero") from None
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            return value(node.operand) * (-1 if isinstance(node.op, ast.USub) else 1)
        raise ValueError("not arithmetic")

    return value(tree.body)


@SPEC.mutant("safe_eval", hint="ZeroDivisionError", original="_solution_safe_eval")
def division_by_zero_not_caught(expression):
    try:
        return _solution_safe_eval(expression)
    except ValueError as e:
        if "division by zero" in str(e):
            raise ZeroDivisionError("division by zero") from None
        raise


@SPEC.mutant("safe_eval")
def no_length_bound(expression):
    """The notebook's safe_eval without its length check."""
    if not isinstance(expression, str):
        raise ValueError("the expression must be a string")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"not an arithmetic expression: {e.msg}") from None
    binary = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
    unary = {ast.UAdd: operator.pos, ast.USub: operator.neg}

    def value(node):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            result = node.value
        elif isinstance(node, ast.BinOp) and type(node.op) in binary:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
                raise ValueError(f"the exponent {right} is larger than {MAX_EXPONENT}")
            try:
                result = binary[type(node.op)](left, right)
            except ZeroDivisionError:
                raise ValueError("division by zero") from None
            except OverflowError:
                raise ValueError("the result is too large") from None
        elif isinstance(node, ast.UnaryOp) and type(node.op) in unary:
            result = unary[type(node.op)](value(node.operand))
        else:
            raise ValueError(f"{type(node).__name__} is not allowed: only numbers, + - * / // % ** and parentheses")
        if isinstance(result, complex) or not abs(result) <= MAX_ABS:
            raise ValueError("the result is too large (or not a real number)")
        return result

    return value(tree.body)


def _calculate(node):
    """What the match-statements safe_eval computes for one node."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
    match node:
        case ast.Constant(value=v) if type(v) in (int, float):
            result = v
        case ast.UnaryOp(op=ast.USub(), operand=x):
            result = -_calculate(x)
        case ast.UnaryOp(op=ast.UAdd(), operand=x):
            result = +_calculate(x)
        case ast.BinOp(left=left, op=op, right=right) if type(op) in ops:
            a, b = _calculate(left), _calculate(right)
            if isinstance(op, ast.Pow) and (abs(b) > 1000 or (abs(a) > 1 and b * math.log10(abs(a)) > 300)):
                raise ValueError("this power is too large")
            try:
                result = ops[type(op)](a, b)
            except (ZeroDivisionError, OverflowError) as error:
                raise ValueError(str(error)) from None
        case _:
            raise ValueError(f"{type(node).__name__} is not arithmetic")
    if isinstance(result, complex) or not abs(result) <= 1e300:
        raise ValueError("the result is too large or not real")
    return result


@SPEC.alternative("safe_eval", name="match statements, a size estimate and other bounds", uses=(_calculate,))
def match_statements_a_size_estimate_and_other_bounds(expression):
    if not isinstance(expression, str) or len(expression) > 1000:
        raise ValueError("give a string of at most 1000 characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as error:
        raise ValueError(f"cannot parse this: {type(error).__name__}") from None
    return _calculate(tree.body)


@SPEC.alternative("safe_eval", name="an explicit stack, floats everywhere")
def an_explicit_stack_floats_everywhere(expression):
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
    if len(expression) > 500:
        raise ValueError("the expression is too long")
    try:
        root = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"syntax error: {error.msg}") from None
    values, todo = [], [(root, False)]
    while todo:  # post-order: a node's operands are computed before the node
        node, ready = todo.pop()
        if isinstance(node, ast.Constant):
            if type(node.value) not in (int, float) or not abs(node.value) <= 1e20:
                raise ValueError(f"{node.value!r} is not a number of at most 1e20")
            values.append(float(node.value))
        elif isinstance(node, ast.UnaryOp) and type(node.op) in (ast.UAdd, ast.USub):
            if not ready:
                todo += [(node, True), (node.operand, False)]
                continue
            values.append(-values.pop() if isinstance(node.op, ast.USub) else values.pop())
        elif isinstance(node, ast.BinOp) and type(node.op) in ops:
            if not ready:
                todo += [(node, True), (node.right, False), (node.left, False)]
                continue
            b, a = values.pop(), values.pop()
            if isinstance(node.op, ast.Pow) and abs(b) > 64:
                raise ValueError("the exponent is larger than 64")
            try:
                values.append(ops[type(node.op)](a, b))
            except (ZeroDivisionError, OverflowError) as error:
                raise ValueError(str(error)) from None
        else:
            raise ValueError(f"{type(node).__name__} is not allowed")
        if isinstance(values[-1], complex) or not abs(values[-1]) <= 1e20:
            raise ValueError("a value is larger than 1e20 (or not a real number)")
    return values[0]


# -- run_program ------------------------------------------------------------------------------------------

@SPEC.mutant("run_program")
def eval_of_each_line(program):
    variables = {}
    for line in program.split("\n"):
        line = line.split("#", 1)[0].strip()
        if line:
            name, expression = line.split("=", 1)
            variables[name.strip()] = eval(expression, {"__builtins__": {}}, dict(variables))
    if "answer" not in variables:
        raise ValueError("no answer")
    return variables


@SPEC.mutant("run_program")
def exec_of_the_whole_program(program):
    variables = {}
    exec(program, {"__builtins__": {}}, variables)
    if "answer" not in variables:
        raise ValueError("no answer")
    return variables


@SPEC.mutant("run_program", hint="parentheses")
def values_substituted_without_parentheses(program):
    variables = {}
    for line in program.split("\n"):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z_]\w*)\s*=\s*(.+)", line)
        if not m:
            raise ValueError(f"not an assignment: {line!r}")
        def substitute(match):
            if match.group(0) not in variables:
                raise ValueError(f"{match.group(0)} is not defined")
            return repr(variables[match.group(0)])
        variables[m.group(1)] = safe_eval(re.sub(r"\b[A-Za-z_]\w*\b", substitute, m.group(2)))
    if "answer" not in variables:
        raise ValueError("no answer")
    return variables


@SPEC.mutant("run_program", hint="whole names")
def names_replaced_inside_other_names(program):
    variables = {}
    for line in program.split("\n"):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z_]\w*)\s*=\s*(.+)", line)
        if not m:
            raise ValueError(f"not an assignment: {line!r}")
        expression = m.group(2)
        for name, value in variables.items():
            expression = expression.replace(name, f"({value!r})")
        variables[m.group(1)] = safe_eval(expression)
    if "answer" not in variables:
        raise ValueError("no answer")
    return variables


@SPEC.mutant("run_program", original="_solution_run_program")
def answer_not_required(program):
    try:
        return _solution_run_program(program)
    except ValueError as e:
        if "answer" in str(e):
            return _solution_run_program(program + "\nanswer = 0")
        raise


@SPEC.mutant("run_program", original="_solution_run_program")
def only_the_answer_returned(program):
    return {"answer": _solution_run_program(program)["answer"]}


@SPEC.mutant("run_program", original="_solution_run_program")
def comment_lines_rejected(program):
    if any(line.strip().startswith("#") for line in program.split("\n")):
        raise ValueError("a line is not `name = expression`")
    return _solution_run_program(program)


@SPEC.alternative("run_program", name="ast for the shape, names replaced at their columns")
def ast_for_the_shape_names_replaced_at_their_columns(program):
    variables = {}
    for number, raw in enumerate(program.split("\n"), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            body = ast.parse(line).body
        except SyntaxError:
            raise ValueError(f"line {number} is not Python") from None
        if (len(body) != 1 or not isinstance(body[0], ast.Assign) or len(body[0].targets) != 1
                or not isinstance(body[0].targets[0], ast.Name)):
            raise ValueError(f"line {number} is not `name = expression`")
        value = body[0].value
        text = line
        for node in sorted((n for n in ast.walk(value) if isinstance(n, ast.Name)), key=lambda n: -n.col_offset):
            if node.id not in variables:
                raise ValueError(f"line {number}: {node.id} is not defined")
            text = text[:node.col_offset] + f"({variables[node.id]!r})" + text[node.end_col_offset:]
        variables[body[0].targets[0].id] = safe_eval(text[value.col_offset:])
    if "answer" not in variables:
        raise ValueError("the program never sets answer")
    return variables


@SPEC.alternative("run_program")
def the_tokenize_module_for_names(program):
    import io
    import tokenize

    variables = {}
    for line in program.splitlines():
        line = line.partition("#")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z_]\w*)\s*=\s*(.+)", line)
        if m is None:
            raise ValueError(f"not an assignment: {line}")
        parts = []
        try:
            for token in tokenize.generate_tokens(io.StringIO(m.group(2)).readline):
                if token.type == tokenize.NAME:
                    if token.string not in variables:
                        raise ValueError(f"{token.string} is used before it is set")
                    parts.append(f"({variables[token.string]!r})")
                else:
                    parts.append(token.string)
        except tokenize.TokenError as error:
            raise ValueError(str(error)) from None
        variables[m.group(1)] = safe_eval(" ".join(parts).strip())
    if "answer" not in variables:
        raise ValueError("answer is never set")
    return variables

