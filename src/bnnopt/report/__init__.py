"""bnnopt.report"""
