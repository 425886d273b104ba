"""Hostile inputs (issue #10): each bad input, where it enters the library, and the
one-line message it gets, raised before any model is built or compiled; the inputs
that are accepted instead, with what they become; and property-based tests
(hypothesis) of the tokenizers and the prompt path.

One file per subsystem: prompts, sampling options, images (variations / inversion),
config rules, Hugging Face checkpoint directories, dataset folders, properties;
`refused` and the shared constants are in helpers.py, the fixtures in conftest.py.
Nothing here compiles a model: every refusal happens in front of one (models are
built without weights, or stubbed), which is also what keeps these files fast.
"""
