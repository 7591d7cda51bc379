"""bnnopt.models"""
