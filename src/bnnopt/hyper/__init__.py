"""bnnopt.hyper"""
