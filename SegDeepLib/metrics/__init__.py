"""SegDeepLib.metrics"""
