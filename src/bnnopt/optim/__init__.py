"""bnnopt.optim"""
