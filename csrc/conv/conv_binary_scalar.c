/* Binary weights x binary activations conv2d, portable C (see conv_binary_body.h). */
#define PK_CONV_BINARY_NAME pk_conv_binary_scalar
#include "conv_binary_body.h"
