def register(parser):
    '''plan parallel layouts'''

