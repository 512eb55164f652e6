"""theta"""
