"""bnnopt.diagnostics: zig-zag / oscillation statistics and TensorBoard logging."""
