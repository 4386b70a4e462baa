import os

# Tests run on 2 CPU cores; keep intra-op threads predictable and never touch a network hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
