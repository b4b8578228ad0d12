"""Argument checks kept by call signature, for the ops whose tensor calls repeat them (conv2d, cross_entropy).

A call whose signature (its arrays' shapes, dtypes and devices, its options keyed with their types) was met
before skips the checks and takes the answer they gave then. Each op builds its key inline, on its hot path;
this holds the answers, a bounded number of them (a full store is emptied, not trimmed: a model has a few
dozen signatures, and a program that makes more only pays the checks again)."""
from __future__ import annotations


class CheckedCalls:
    def __init__(self, most: int = 512):
        self.most = most
        self.answers: dict = {}
        self.get = self.answers.get  # the lookup, bound once: it runs on every call

    def remember(self, key, answer):
        """Keeps answer for key and returns it."""
        if len(self.answers) >= self.most:
            self.answers.clear()
        self.answers[key] = answer
        return answer
