"""bnnopt.nn"""
