// android.graphics.Bitmap and Matrix: the members the snippets use.
package android.graphics

abstract class Bitmap {
    abstract val width: Int
    abstract val height: Int
    abstract fun getPixels(pixels: IntArray, offset: Int, stride: Int, x: Int, y: Int, width: Int, height: Int)

    companion object {
        @JvmStatic fun createBitmap(source: Bitmap, x: Int, y: Int, width: Int, height: Int): Bitmap = source
        @JvmStatic fun createBitmap(source: Bitmap, x: Int, y: Int, width: Int, height: Int, m: Matrix?,
                                    filter: Boolean): Bitmap = source
        @JvmStatic fun createScaledBitmap(src: Bitmap, dstWidth: Int, dstHeight: Int, filter: Boolean): Bitmap = src
    }
}

class Matrix {
    fun postRotate(degrees: Float): Boolean = true
}
