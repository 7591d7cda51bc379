"""bnnopt.quant"""
