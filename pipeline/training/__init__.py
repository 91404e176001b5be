"""The training loop's parts: the LightningModule, the paper's lr policy, the callbacks (checkpoint timing,
throughput, conv1's figure, skipped samples, the final 10-crop test) and the test protocol itself.
``pipeline.train`` assembles them; nothing here imports a command."""
