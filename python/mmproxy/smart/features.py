"""What the learned models see: a prompt as its sentence embedding (the shipped MiniLM, the semantic cache's own)
plus the Rust core's cheap text features; an answer as its embedding plus the shape features below.

One path for training, evaluation and the running gateway, so a model is always fed what it was trained on.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from mmproxy._native import PROMPT_FEATURE_NAMES, prompt_features


class Embedder(Protocol):
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


def prompt_matrix(embedder: Embedder, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, cheap features) of ``prompts``: (n, dim) unit rows and (n, len(PROMPT_FEATURE_NAMES))."""
    vectors = embedder.embed(list(prompts))
    cheap = np.array([prompt_features(p) for p in prompts], dtype=np.float32).reshape(len(prompts),
                                                                                      len(PROMPT_FEATURE_NAMES))
    return vectors, cheap


# -- answers ----------------------------------------------------------------------------------
ANSWER_FEATURE_NAMES = ("length", "final_answer", "arithmetic_checked", "arithmetic_wrong", "ends_cleanly",
                        "hedged")
_FINAL = re.compile(r"(####\s*\S|answer is|final answer|\\boxed\{|^answer\s*:)", re.IGNORECASE | re.MULTILINE)
# "12 * 3 = 36", "<<12*3=36>>36": an arithmetic claim the scorer can check
_CLAIM = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?(?:\s*[-+*/x\u00d7\u00f7]\s*\(?\d[\d,]*(?:\.\d+)?\)?)+)\s*=\s*\$?"
                    r"(-?\d[\d,]*(?:\.\d+)?)")
_HEDGE = re.compile(r"\b(not sure|cannot be determined|i'm sorry|i cannot|unclear|it depends)\b", re.IGNORECASE)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def answer_features(answer: str) -> list[float]:
    """Shape features of an answer, in ``ANSWER_FEATURE_NAMES`` order, each in [0, 1].

    Why these: a cut-off answer rarely states a final answer; a wrong arithmetic step ("3 * 12 = 38") almost
    always means a wrong result; a hedging answer is often a refusal. They hold for any worked answer, not one
    benchmark's format.
    """
    text = answer.strip()
    checked = wrong = 0
    for expression, claimed in _CLAIM.findall(text):
        value = _arithmetic(expression)
        if value is None:
            continue
        checked += 1
        result = float(claimed.replace(",", ""))
        wrong += abs(value - result) > 1e-6 * max(1.0, abs(result)) and abs(round(value, 2) - result) > 1e-9
    return [
        min(np.log1p(len(text)) / 8, 1.0),
        float(bool(_FINAL.search(text))),
        min(checked, 10) / 10,
        min(wrong, 3) / 3,
        float(text[-1:] in ".!?)`*\"'" or bool(_FINAL.search(text[text.rfind("\n") + 1:]))),
        float(bool(_HEDGE.search(text[:400]))),
    ]


def _arithmetic(expression: str) -> float | None:
    """The value of a plain arithmetic expression (+ - * / and parentheses), or None."""
    source = expression.replace(",", "").replace("x", "*").replace("\u00d7", "*").replace("\u00f7", "/")
    try:
        return _evaluate(ast.parse(source, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError):
        return None


def _evaluate(node: ast.expr) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    raise ValueError("not plain arithmetic")


def answer_matrix(embedder: Embedder, answers: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, shape features) of ``answers``."""
    vectors = embedder.embed(list(answers))
    shape = np.array([answer_features(a) for a in answers], dtype=np.float32).reshape(len(answers),
                                                                                     len(ANSWER_FEATURE_NAMES))
    return vectors, shape
