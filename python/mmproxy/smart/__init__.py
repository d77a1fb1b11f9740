"""Learned routing: which model a request needs, predicted from the prompt, and a cascade that escalates when the
cheap answer looks unreliable.

Offline parts (records, features, training, evaluation) and the run-time parts the gateway's virtual models use
(``QualityModel.predict``, ``RouterPolicy``, ``AnswerScorer``) share one feature path, so what ``mmproxy router
eval`` measures is what the gateway does.
"""
