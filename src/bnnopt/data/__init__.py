"""bnnopt.data"""
