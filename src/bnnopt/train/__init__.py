"""bnnopt.train"""
