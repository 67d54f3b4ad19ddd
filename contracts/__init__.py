"""What the layers exchange: workflow and activity payloads (`payloads`), the broker and
market data protocols (`ports`) and the names Temporal sees (`names`). Depends on domain/
only."""
