"""The course's code that a check may run inside your kernel (no solutions here).

A check runs in the grader and reaches your notebook through the `student` handle; when it needs an object
built on your side (a counter on your model, a scripted stand-in for a language model), it asks the kernel to
build it from here: `student.construct("llmcourse.in_kernel.ForwardCounter", model)`. Besides
`llmcourse.assets` (the course's models and tokenizers), this module is the only llmcourse code the kernel's
agent lets a check call (see `llmcourse.agent`), so it stays small: each helper does what its docstring says
and touches nothing else, and none of them solves an exercise. The notebooks' own scaffolding (plots, data,
training loops) lives in the `*_tools` modules.

    call_repeatedly, call_each                      02_variants: many calls of your function in one request
    requires_grad_flags, module_types, gradients    04_lora: a model described as plain data
    ForwardCounter                                  03_prompting: your model's forward passes
    BanditPolicy, Bandit                            05_rlhf: a one-token "language model" and its bandit
    WordTokenizer, ScriptedModel, ToolBox,          06_applications: stand-ins for a tokenizer, a language model
    calculator_tools, course_model_fn                 and tools, and course-lm-apps as a `model_fn`
"""
from __future__ import annotations

import operator
import re
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

__all__ = ["BanditPolicy", "Bandit", "call_repeatedly", "call_each", "requires_grad_flags", "module_types", "gradients", "ForwardCounter",
           "WordTokenizer", "ScriptedModel", "ToolBox", "Calculator", "calculator_tools", "generate_batch",
           "model_fn", "course_model_fn"]


# -- many calls in one request (02_variants) --------------------------------------------------------------
# The checks call your random procedures hundreds of times and inspect every result.

def call_repeatedly(fn: Callable, n: int, *args: Any, **kwargs: Any) -> list:
    """[fn(*args, **kwargs) for n times], with the same arguments (a generator among them keeps advancing)."""
    return [fn(*args, **kwargs) for _ in range(int(n))]


def call_each(fn: Callable, calls: list) -> list:
    """[fn(*args, **kwargs) for each (args, kwargs) in calls]."""
    return [fn(*args, **kwargs) for args, kwargs in calls]


# -- a model as plain data (04_lora) ------------------------------------------------------------------------
# One request for a whole model, instead of one per parameter.

def requires_grad_flags(model: nn.Module) -> dict[str, bool]:
    """{parameter name: requires_grad} for every parameter of `model`."""
    return {name: bool(p.requires_grad) for name, p in model.named_parameters()}


def module_types(model: nn.Module) -> dict[str, str]:
    """{module name: class name} for every submodule of `model` (the root is "")."""
    return {name: type(module).__name__ for name, module in model.named_modules()}


def gradients(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Backpropagate (module(x) * weight).sum() from fresh gradients; {parameter name: its gradient or None}.

    The parameters' .grad are None before and after."""
    for p in module.parameters():
        p.grad = None
    (module(x) * weight).sum().backward()
    out = {name: (None if p.grad is None else p.grad.detach().clone()) for name, p in module.named_parameters()}
    for p in module.parameters():
        p.grad = None
    return out


# -- counting forward passes (03_prompting) -----------------------------------------------------------------

class ForwardCounter:
    """Records the token ids fed to `model` in each forward pass, until `remove()`.

        counter = ForwardCounter(model)      # from now on, every forward pass of `model` is recorded
        ids = generate_with_cache(model, prompt_ids, 8)
        counter.lengths                      # input length of each pass, e.g. [12, 1, 1, 1, 1, 1, 1, 1]
        counter.remove()

    The hook sits on the model's input embedding, so it sees every pass however the model is called
    (`model(...)`, `model.forward(...)`, `model.model(...)` then the head).
    """

    def __init__(self, model: torch.nn.Module):
        embedding = model.get_input_embeddings()
        if embedding is None:
            raise ValueError("ForwardCounter needs a model with an input embedding (get_input_embeddings()).")
        self.lengths: list[int] = []
        self.batch_sizes: list[int] = []
        self.token_ids: list[list[list[int]]] = []
        self._handle = embedding.register_forward_pre_hook(self._record)

    def _record(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        ids = args[0] if args else None
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().reshape(-1, ids.shape[-1]) if ids.dim() else ids.reshape(1, 1)
            self.lengths.append(int(ids.shape[-1]))
            self.batch_sizes.append(int(ids.shape[0]))
            self.token_ids.append(ids.cpu().tolist())

    @property
    def calls(self) -> int:
        return len(self.lengths)

    def reset(self) -> None:
        self.lengths.clear()
        self.batch_sizes.clear()
        self.token_ids.clear()

    def remove(self) -> None:
        self._handle.remove()

    def __enter__(self) -> "ForwardCounter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


# -- stand-ins (06_applications) ----------------------------------------------------------------------------
# A tokenizer whose chunks are easy to read, and a "language model" and tools that answer from a script and
# tables, so that a ReAct run is the same every time.

class Encoding(dict):
    """What WordTokenizer(text) returns: a dict that also reads as attributes (enc["input_ids"], enc.input_ids)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class WordTokenizer:
    """A tokenizer for worked examples: one token per word (split on whitespace); decode joins with spaces.

    Like BERT-style tokenizers, it adds <s> and </s> around the text unless add_special_tokens=False.
    """

    bos_token, eos_token = "<s>", "</s>"
    bos_token_id, eos_token_id = 0, 1

    def __init__(self):
        self.words = ["<s>", "</s>"]
        self.ids = {"<s>": 0, "</s>": 1}

    def tokenize(self, text, **kwargs):
        return text.split()

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self.convert_tokens_to_ids([tokens])[0]
        ids = []
        for token in tokens:
            if token not in self.ids:  # a new word gets the next id
                self.ids[token] = len(self.words)
                self.words.append(token)
            ids.append(self.ids[token])
        return ids

    def convert_ids_to_tokens(self, ids, skip_special_tokens=False):
        ids = _id_list(ids)
        return [self.words[i] for i in ids if not (skip_special_tokens and i < 2)]

    def convert_tokens_to_string(self, tokens):
        return " ".join(tokens)

    def encode(self, text, add_special_tokens=True, **kwargs):
        ids = self.convert_tokens_to_ids(self.tokenize(text))
        return [0, *ids, 1] if add_special_tokens else ids

    def __call__(self, text, add_special_tokens=True, return_tensors=None, **kwargs):
        ids = self.encode(text, add_special_tokens)
        if return_tensors == "pt":
            return Encoding(input_ids=torch.tensor([ids], dtype=torch.long), attention_mask=torch.ones(1, len(ids),
                                                                                                       dtype=torch.long))
        return Encoding(input_ids=ids, attention_mask=[1] * len(ids))

    def decode(self, ids, skip_special_tokens=False, **kwargs):
        return " ".join(self.convert_ids_to_tokens(ids, skip_special_tokens))

    def batch_decode(self, sequences, skip_special_tokens=False, **kwargs):
        return [self.decode(s, skip_special_tokens) for s in sequences]

    def __len__(self):
        return len(self.words)


def _id_list(ids) -> list[int]:
    if isinstance(ids, torch.Tensor):
        ids = ids.reshape(-1).tolist()
    return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]


class ScriptedModel:
    """A stand-in for a language model in the ReAct checks: call i returns the i-th text of the script (the last
    one again once the script runs out). "{observation}" in a text becomes the last observation in the prompt,
    so a script can answer with what a tool said. It keeps every prompt it was given."""

    def __init__(self, outputs, max_calls=40):
        self.outputs = list(outputs)
        self.max_calls = max_calls
        self.prompts = []

    def __call__(self, prompt):
        if not isinstance(prompt, str):
            raise TypeError(f"model_fn takes the prompt as one string, not {type(prompt).__name__}")
        self.prompts.append(prompt)
        if len(self.prompts) > self.max_calls:
            raise RuntimeError(f"model_fn was called {len(self.prompts)} times and never stopped: the loop must end "
                               f"after max_steps calls")
        text = self.outputs[min(len(self.prompts), len(self.outputs)) - 1]
        observations = re.findall(r"^Observation: (.*)$", prompt, flags=re.MULTILINE)
        return text.replace("{observation}", observations[-1] if observations else "")


class ToolBox(dict):
    """The tools of a ReAct check, {name: function}: each answers from its table (a KeyError for an argument the
    table lacks), or, for the `failing` ones, raises RuntimeError on every call. `calls` lists (tool, argument)."""

    def __init__(self, tables, failing=None):
        super().__init__()
        self.calls = []
        for name, table in tables.items():
            self[name] = self._lookup(name, dict(table))
        for name, message in (failing or {}).items():
            self[name] = self._broken(name, message)

    def _lookup(self, name, table):
        def tool(argument):
            self.calls.append((name, argument))
            if argument not in table:
                raise KeyError(f"{name} knows nothing about {argument!r}")
            return table[argument]
        return tool

    def _broken(self, name, message):
        def tool(argument):
            self.calls.append((name, argument))
            raise RuntimeError(message)
        return tool


class Calculator:
    """A stand-in calculator tool: exactly two numbers and one of + - * / ("13925 - 6366"); anything else is
    an error. (Your safe_eval does far more; the checks of `react` use this one so that they test only the loop.)"""

    _TWO_NUMBERS = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([-+*/])\s*(-?\d+(?:\.\d+)?)\s*$")

    def __call__(self, expression: str):
        m = self._TWO_NUMBERS.match(str(expression))
        if not m:
            raise ValueError(f"this calculator takes two numbers and one of + - * /, not {expression!r}")
        a, op, b = m.groups()
        x, y = (float(v) if "." in v else int(v) for v in (a, b))
        if op == "/" and y == 0:
            raise ValueError("division by zero")
        return {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op](x, y)


def calculator_tools() -> dict:
    """{"calculator": Calculator()}: the tools of the checks' end-to-end ReAct run."""
    return {"calculator": Calculator()}


# -- a course model as `model_fn` (06_applications) ---------------------------------------------------------
# The notebook drives its models through the same two functions (llmcourse.applications_tools re-exports them).

STOP = "\nObservation:"


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 32, batch_size: int = 32,
                   first_line: bool = False) -> list[str]:
    """Greedy new text for every prompt (left-padded batches); with `first_line`, only up to the first newline.

    The tokenizer's padding side is set back to what it was."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[i:i + batch_size]), return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            for row in out[:, enc["input_ids"].shape[1]:]:
                text = tokenizer.decode(row, skip_special_tokens=True)
                texts.append(text.split("\n")[0].strip() if first_line else text)
    finally:
        tokenizer.padding_side = side
    return texts


def model_fn(model, tokenizer, max_new_tokens: int = 48, counter: list | None = None) -> Callable[[str], str]:
    """A function prompt -> the model's greedy new text, stopped once it starts to invent an observation.

    `counter`, if given, gets one entry per call (the number of calls is the cost of an agent)."""

    def call(prompt: str) -> str:
        if counter is not None:
            counter.append(1)
        text = generate_batch(model, tokenizer, [prompt], max_new_tokens)[0]
        return text.split(STOP)[0] + (STOP if STOP in text else "")

    return call


def course_model_fn(name: str = "course-lm-apps", max_new_tokens: int = 48) -> Callable[[str], str]:
    """`model_fn` for a course model loaded here (the checks run a real ReAct loop in your kernel with it)."""
    from llmcourse.assets import load_model, load_tokenizer

    return model_fn(load_model(name), load_tokenizer(name), max_new_tokens)


# -- a bandit for PPO (05_rlhf) ------------------------------------------------------------------------------
# The smallest RL problem with a known answer: one prompt token, one response token (the action), a fixed
# reward per action. The policy looks like a causal LM to your code: logits (B, L, V) and hidden states.

class _Output:
    def __init__(self, logits, hidden_states):
        self.logits, self.hidden_states = logits, hidden_states


class _Config:
    def __init__(self, hidden_size):
        self.hidden_size = hidden_size


class BanditPolicy(nn.Module):
    """A policy over `n_actions` one-token responses: an embedding, tanh, and a linear layer to the logits."""

    def __init__(self, n_actions: int = 4, hidden_size: int = 8, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.config = _Config(hidden_size)
        self.embed = nn.Embedding(n_actions, hidden_size)
        self.head = nn.Linear(hidden_size, n_actions)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(n_actions, hidden_size, generator=gen))
            self.head.weight.copy_(torch.randn(n_actions, hidden_size, generator=gen) * 0.1)
            self.head.bias.zero_()

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False, **kwargs):
        hidden = torch.tanh(self.embed(input_ids))  # (B, L, H)
        return _Output(self.head(hidden), (hidden,) if output_hidden_states else None)


class _BanditRollout:
    def __init__(self, input_ids):
        self.input_ids = input_ids  # (B, 2): the prompt token 0, then the action
        self.attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        self.response_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        self.response_mask[:, 1] = True


class Bandit:
    """A policy, its frozen reference (the same start), a critic head, an SGD optimiser over both, and a bandit
    whose action a earns `rewards[a]`. `sample(policy)` and `score(rollout)` are `ppo_train`'s sample_fn and
    score_fn; `evaluate(policy)` (the probability of the best action) is an `eval_fn` that counts its calls."""

    def __init__(self, rewards=(0.0, 1.0, 0.3, -0.5), batch_size: int = 16, seed: int = 0, lr: float = 0.1,
                 optimizer: str = "sgd"):
        self.rewards = torch.tensor(rewards, dtype=torch.float32)
        self.policy = BanditPolicy(len(rewards), seed=seed)
        self.reference = BanditPolicy(len(rewards), seed=seed).eval()
        self.value_head = nn.Sequential(nn.Linear(self.policy.config.hidden_size, 1), nn.Flatten(-2))
        with torch.no_grad():
            self.value_head[0].weight.copy_(torch.randn(1, self.policy.config.hidden_size,
                                                        generator=torch.Generator().manual_seed(seed + 7)))
            self.value_head[0].bias.zero_()
        parameters = list(self.policy.parameters()) + list(self.value_head.parameters())
        self.optimizer = torch.optim.Adam(parameters, lr=lr) if optimizer == "adam" else torch.optim.SGD(parameters, lr=lr)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.evaluations = 0

    @torch.no_grad()
    def probabilities(self, policy=None) -> torch.Tensor:
        """The policy's probability of each action (the distribution after the prompt token)."""
        policy = self.policy if policy is None else policy
        return torch.softmax(policy(input_ids=torch.zeros(1, 1, dtype=torch.long)).logits[0, 0], -1)

    def sample(self, policy):
        actions = torch.multinomial(self.probabilities(policy), self.batch_size, replacement=True,
                                    generator=self.generator)
        return _BanditRollout(torch.stack([torch.zeros_like(actions), actions], 1))

    def score(self, rollout) -> torch.Tensor:
        return self.rewards[rollout.input_ids[:, 1]]

    def evaluate(self, policy) -> float:
        self.evaluations += 1
        return float(self.probabilities(policy)[int(self.rewards.argmax())])

    def optimizer_steps(self) -> int:
        """How many steps the optimiser took (Adam counts them; 0 for SGD)."""
        return max((int(state.get("step", 0)) for state in self.optimizer.state.values()), default=0)

    def state(self) -> dict:
        """Every parameter of the policy (`policy.`) and the critic (`value_head.`), as data."""
        state = {f"policy.{k}": v.detach().clone() for k, v in self.policy.state_dict().items()}
        state.update({f"value_head.{k}": v.detach().clone() for k, v in self.value_head.state_dict().items()})
        return state
