"""Looking inside: TensorBoard pictures and per-layer norms during training, ||delta^l|| over fixed
inputs (vanishing and exploding gradients), users' own digit images and what the hidden units learned."""
