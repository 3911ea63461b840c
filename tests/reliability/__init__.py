"""The reliability and security suite: crashes, concurrency, corruption, hostile payloads, fuzzing, locking.

Every test here is marked ``reliability``; each prints its figures (kills
survived, versions checked, writes under contention, inputs tried) and merges
them into ``test-artifacts/reliability.json`` (see ``figures.py``).
"""
